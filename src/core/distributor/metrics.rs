//! The distributor's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of publishes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// `prompt_tweak`, `rollback`, ...
    pub update_type: &'static str,
}

/// Label of acks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `applied`, `rejected` or `skipped`.
    pub status: &'static str,
}

/// Label of protocol errors and refused requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Machine code (`invalid_frame`, `hello_timeout`, ...).
    pub code: &'static str,
}

/// Every metric the distributor exports.
pub struct Metrics {
    registry: Registry,
    /// WebSocket subscribers connected now.
    pub subscribers: Gauge,
    /// Updates published, by type.
    pub publishes: Family<TypeLabel, Counter>,
    /// Rollouts widened.
    pub widenings: Counter,
    /// Update frames sent to subscribers (replays, live and widenings).
    pub deliveries: Counter,
    /// Updates replayed from the log after a hello.
    pub replayed: Counter,
    /// Subscribers that fell behind the live channel and were caught up from the log.
    pub lag_catchups: Counter,
    /// Acks received, by status.
    pub acks: Family<StatusLabel, Counter>,
    /// Protocol violations answered with an error frame and a close, by code.
    pub protocol_errors: Family<CodeLabel, Counter>,
    /// Connections closed because a send did not complete in time.
    pub send_timeouts: Counter,
    /// Connections closed because they did not answer a ping in time.
    pub reaped: Counter,
    /// Connections closed because they sent more control frames than allowed.
    pub control_floods: Counter,
    /// Connections closed because a frame did not fit in their write queue.
    pub queue_overflows: Counter,
    /// HTTP requests refused, by code.
    pub rejected: Family<CodeLabel, Counter>,
    /// Delivery/ack rows waiting for the writer, sampled at scrape time.
    pub write_queue: Gauge,
    /// Delivery/ack rows dropped because the write queue was full, sampled at scrape time.
    pub write_dropped: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phoenix_distributor");
        let m = Metrics {
            registry: Registry::default(),
            subscribers: Gauge::default(),
            publishes: Family::default(),
            widenings: Counter::default(),
            deliveries: Counter::default(),
            replayed: Counter::default(),
            lag_catchups: Counter::default(),
            acks: Family::default(),
            protocol_errors: Family::default(),
            send_timeouts: Counter::default(),
            reaped: Counter::default(),
            control_floods: Counter::default(),
            queue_overflows: Counter::default(),
            rejected: Family::default(),
            write_queue: Gauge::default(),
            write_dropped: Gauge::default(),
        };
        registry.register(
            "subscribers",
            "WebSocket subscribers connected now",
            m.subscribers.clone(),
        );
        registry.register(
            "publishes",
            "Updates published, by type",
            m.publishes.clone(),
        );
        registry.register("widenings", "Rollouts widened", m.widenings.clone());
        registry.register(
            "deliveries",
            "Update frames sent to subscribers",
            m.deliveries.clone(),
        );
        registry.register(
            "replayed",
            "Updates replayed from the log after a hello",
            m.replayed.clone(),
        );
        registry.register(
            "lag_catchups",
            "Subscribers caught up from the log after falling behind the live channel",
            m.lag_catchups.clone(),
        );
        registry.register("acks", "Acks received, by status", m.acks.clone());
        registry.register(
            "protocol_errors",
            "Protocol violations answered with an error frame and a close, by code",
            m.protocol_errors.clone(),
        );
        registry.register(
            "send_timeouts",
            "Connections closed because a send did not complete in time",
            m.send_timeouts.clone(),
        );
        registry.register(
            "reaped",
            "Connections closed because they did not answer a ping",
            m.reaped.clone(),
        );
        registry.register(
            "control_floods",
            "Connections closed (1008) for sending more pings or pongs than allowed",
            m.control_floods.clone(),
        );
        registry.register(
            "queue_overflows",
            "Connections closed because a frame did not fit in their bounded write queue",
            m.queue_overflows.clone(),
        );
        registry.register(
            "rejected_requests",
            "HTTP requests refused, by code",
            m.rejected.clone(),
        );
        registry.register(
            "write_queue_rows",
            "Delivery and ack rows waiting for the update-log writer",
            m.write_queue.clone(),
        );
        registry.register(
            "write_dropped_rows",
            "Delivery and ack rows dropped because the writer queue was full",
            m.write_dropped.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a protocol violation.
    pub fn protocol_error(&self, code: &'static str) {
        self.protocol_errors
            .get_or_create(&CodeLabel { code })
            .inc();
    }

    /// Counts a refused HTTP request.
    pub fn reject(&self, code: &'static str) {
        self.rejected.get_or_create(&CodeLabel { code }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
