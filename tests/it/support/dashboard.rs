//! A distributor and a collector serving the dashboard over it, in process on 127.0.0.1:0,
//! as `phoenix serve all` runs them (the dashboard reads the distributor directly), or with
//! the dashboard reading the distributor over HTTP as `serve collector` does.

use std::time::Duration;

use phoenix::core::collector::{CollectorConfig, Extra};
use phoenix::core::dashboard::{self, Dashboard, Updates};
use phoenix::core::distributor::DistributorConfig;
use phoenix::core::distributor::client::DistributorClient;
use phoenix::core::shared::client::{ApiClient, ClientOptions};
use phoenix::core::store::StoreOptions;

use super::backend::DataDir;
use super::collector::{DB_FILE, KEY_FILE, TestCollector};
use super::distributor::TestDistributor;

/// How the dashboard reads the update log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Directly (`serve all`).
    Local,
    /// Over the distributor's HTTP API (`serve collector --distributor-url`).
    Http,
}

/// A collector with the dashboard, and the distributor it shows.
pub struct Board {
    /// The collector; the dashboard is at its URL.
    pub collector: TestCollector,
    /// The distributor.
    pub distributor: TestDistributor,
    config: CollectorConfig,
    updates: Updates,
}

impl Board {
    /// Both servers on fresh directories sharing one orch hash key (as `serve all` does);
    /// live pages refresh every 100 ms.
    pub async fn start(config: CollectorConfig, admin: Option<&str>, reads: Reads) -> Board {
        // Publishing stays open (the tests publish without a token); the admin token is the
        // collector's, which the dashboard checks.
        let distributor = TestDistributor::start(DistributorConfig::default()).await;
        let dir = tempfile::tempdir().expect("collector directory");
        std::fs::copy(
            distributor.dir.path().join(KEY_FILE),
            dir.path().join(KEY_FILE),
        )
        .expect("share the orch hash key");
        let updates = match reads {
            Reads::Local => Updates::Local(distributor.state.clone()),
            Reads::Http => Updates::Remote(DistributorClient::new(
                ApiClient::new(&ClientOptions {
                    base_url: distributor.url.clone(),
                    token: None,
                    ca_cert: None,
                    timeout: Duration::from_secs(5),
                })
                .expect("distributor client"),
            )),
        };
        let config = CollectorConfig {
            admin_token: admin.map(str::to_owned),
            ..config
        };
        let collector = start_collector(None, dir.into(), &config, &updates).await;
        Board {
            collector,
            distributor,
            config,
            updates,
        }
    }

    /// The dashboard's URL for `path`.
    pub fn page(&self, path: &str) -> String {
        self.collector.endpoint(path)
    }

    /// Stops the collector (open pages lose their stream), waits `down`, and starts it again
    /// on the same address and data.
    pub async fn restart_collector(&mut self, down: Duration) {
        let addr = self.collector.url.trim_start_matches("http://").to_owned();
        let placeholder = start_collector(
            None,
            tempfile::tempdir().unwrap().into(),
            &self.config,
            &self.updates,
        )
        .await;
        let old = std::mem::replace(&mut self.collector, placeholder);
        let dir = old.stop().await;
        tokio::time::sleep(down).await;
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("bind the collector's address again");
        let placeholder = std::mem::replace(
            &mut self.collector,
            start_collector(Some(listener), dir, &self.config, &self.updates).await,
        );
        placeholder.stop().await;
    }
}

async fn start_collector(
    listener: Option<tokio::net::TcpListener>,
    dir: DataDir,
    config: &CollectorConfig,
    updates: &Updates,
) -> TestCollector {
    let store_options = StoreOptions::new(dir.path().join(DB_FILE));
    let updates = updates.clone();
    TestCollector::start_on(
        listener,
        dir,
        config.clone(),
        store_options,
        |s| s,
        move |state| {
            let d = Dashboard::refreshing_every(
                state.clone(),
                updates,
                false,
                Duration::from_millis(100),
            );
            Some(Extra {
                routes: dashboard::router(d.clone()),
                on_shutdown: Box::new(move || d.stop_streams()),
            })
        },
    )
    .await
}
