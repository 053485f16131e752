//! Publish, widen and rollback without a transport: validate an already-parsed request,
//! commit it to the [`UpdateLog`], announce it on the [`Bus`], and answer with a typed result.
//! The HTTP handlers ([`super::publish`]) are adapters over it; a test or a message-bus
//! consumer calls it the same way.
//!
//! Log mutations commit and announce one at a time, so announcements follow commit (seq)
//! order: a subscriber reads everything up to a bus position from the log and everything
//! after it live, never neither and never both.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Error;
use super::bus::{Bus, Prepared};
use super::doorbell::Doorbell;
use super::metrics::{Metrics, TypeLabel};
use super::publish::Widened;
use crate::core::shared::anonymize::{Anonymizer, is_orch_hash};
use crate::core::store::update_log::{StoredUpdate, UpdateLog};
use crate::core::telemetry::now_unix;
use crate::core::updates::{FieldError, PublishRequest, UpdateEnvelope, UpdateType};

/// Why a publish, widening or rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The update is not valid (its field named).
    #[error("{0}")]
    InvalidUpdate(FieldError),
    /// The request around the update is not valid (e.g. a widening's percentage).
    #[error("{0}")]
    InvalidRequest(FieldError),
    /// The log refused or failed (not found, not wider, closed, storage).
    #[error(transparent)]
    Log(#[from] Error),
}

/// The distributor's write side over a log and a bus.
pub struct Service {
    log: Arc<dyn UpdateLog>,
    bus: Arc<dyn Bus>,
    anonymizer: Anonymizer,
    metrics: Arc<Metrics>,
    /// Held across "commit to the log, then announce" so announcements follow commit order.
    writing: tokio::sync::Mutex<()>,
    /// Rung after each commit, for the other nodes sharing the log.
    doorbell: Option<Doorbell>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// A service committing to `log` and announcing on `bus`; `anonymizer` hashes targets.
    pub fn new(
        log: Arc<dyn UpdateLog>,
        bus: Arc<dyn Bus>,
        anonymizer: Anonymizer,
        metrics: Arc<Metrics>,
    ) -> Service {
        Service {
            log,
            bus,
            anonymizer,
            metrics,
            writing: tokio::sync::Mutex::new(()),
            doorbell: None,
        }
    }

    /// The same service, ringing `bell` after each commit.
    pub fn ringing(mut self, bell: Doorbell) -> Service {
        self.doorbell = Some(bell);
        self
    }

    async fn ring(&self, seq: u64) {
        if let Some(bell) = &self.doorbell {
            bell.ring(seq).await;
        }
    }

    /// Validates and publishes an update (a `rollback` undoes the update its payload names);
    /// returns the envelope with the seq the log assigned, once committed and announced.
    pub async fn publish(&self, req: PublishRequest) -> Result<UpdateEnvelope, ServiceError> {
        let own_targeting =
            req.target_orch.is_some() || req.target_agent_prefix.is_some() || req.cascade.is_some();
        let own_tier = req.tier_required.is_some();
        let mut new = req.validate().map_err(ServiceError::InvalidUpdate)?;

        // Publishes (and widenings) commit and announce one at a time, in seq order.
        let _writing = self.writing.lock().await;
        let mut rolls_back = None;
        if new.update_type == UpdateType::Rollback {
            let key = new.payload["update_id"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let original = self.log.find(&key).await?;
            let Some(original) = original.map(|o| o.envelope) else {
                return Err(ServiceError::InvalidUpdate(FieldError {
                    field: "payload.update_id",
                    message: format!("no update {key:?} in the log"),
                }));
            };
            if original.update_type == UpdateType::Rollback {
                return Err(ServiceError::InvalidUpdate(FieldError {
                    field: "payload.update_id",
                    message: format!(
                        "update {} is itself a rollback; publish the update it undid again instead",
                        original.update_id
                    ),
                }));
            }
            if !own_targeting {
                // Undo exactly where the original went.
                new.target_orch = original.target_orch.clone();
                new.target_agent_prefix = original.target_agent_prefix.clone();
                new.cascade = original.cascade;
            }
            if !own_tier {
                new.tier_required = original.tier_required;
            }
            // A seq given as the reference becomes the id subscribers know the update by.
            new.payload["update_id"] = Value::String(original.update_id.clone());
            rolls_back = Some(original.update_id);
        }
        let target_orch_hash = new.target_orch.as_deref().map(|t| {
            if is_orch_hash(t) {
                t.to_owned()
            } else {
                self.anonymizer.orch_hash(t)
            }
        });
        let initial_percent = new.rollout_percent;
        let envelope = new.into_envelope(uuid::Uuid::now_v7().to_string(), 0, now_unix());
        let envelope = self
            .log
            .append(envelope, target_orch_hash.clone(), rolls_back)
            .await?;
        if envelope.seq == self.bus.position().seq + 1 {
            self.bus.announce_update(Prepared::new(StoredUpdate {
                envelope: envelope.clone(),
                initial_percent,
                target_orch_hash,
            }));
        } else {
            // Another process shares the log and committed before this one: announce its
            // updates first, then this one, in seq order.
            self.announce_committed().await?;
        }
        drop(_writing);
        self.ring(envelope.seq).await;
        self.metrics
            .publishes
            .get_or_create(&TypeLabel {
                update_type: envelope.update_type.as_str(),
            })
            .inc();
        tracing::info!(
            seq = envelope.seq,
            update_id = %envelope.update_id,
            update_type = envelope.update_type.as_str(),
            "update published"
        );
        Ok(envelope)
    }

    /// Publishes a rollback of the update `key` names (its id, or its seq), to where the
    /// original went: the same as publishing `{"update_type":"rollback","payload":{"update_id":key}}`.
    pub async fn rollback(&self, key: &str) -> Result<UpdateEnvelope, ServiceError> {
        self.publish(PublishRequest {
            update_type: Some(UpdateType::Rollback.as_str().to_owned()),
            payload: Some(json!({ "update_id": key })),
            ..PublishRequest::default()
        })
        .await
    }

    /// Raises the rollout of the update `key` names (its id, or its seq) to `percent` (1–100,
    /// above the current percentage); returns the update as widened, once committed and
    /// announced.
    pub async fn widen(&self, key: &str, percent: u8) -> Result<Widened, ServiceError> {
        if !(1..=100).contains(&percent) {
            return Err(ServiceError::InvalidRequest(FieldError {
                field: "rollout_percent",
                message: format!("{percent} is not an integer from 1 to 100"),
            }));
        }
        let _writing = self.writing.lock().await;
        let stored = self
            .log
            .find(key)
            .await?
            .ok_or_else(|| Error::NotFound(key.to_owned()))?;
        let w = self
            .log
            .widen(&stored.envelope.update_id, percent, now_unix())
            .await?;
        let update = w.update.envelope.clone();
        if w.widen_seq == self.bus.position().widen_seq + 1 {
            self.bus
                .announce_widening(Prepared::new(w.update), w.from_percent, w.widen_seq);
        } else {
            self.announce_committed().await?;
        }
        drop(_writing);
        self.ring(update.seq).await;
        self.metrics.widenings.inc();
        tracing::info!(seq = update.seq, update_id = %update.update_id, from = ?w.from_percent, to = percent, "rollout widened");
        Ok(Widened {
            update,
            previous_rollout_percent: w.from_percent,
        })
    }
}

impl Service {
    /// Announces on the bus what other processes sharing the log committed since the bus's
    /// position: their updates in seq order, then their widenings one by one. Returns how
    /// many announcements it made. A distributor on a shared database calls it every so
    /// often, so its subscribers get every update, whoever published it.
    pub async fn follow_log(&self) -> Result<usize, Error> {
        let _writing = self.writing.lock().await;
        self.announce_committed().await
    }

    /// [`Service::follow_log`], with the writing lock held.
    async fn announce_committed(&self) -> Result<usize, Error> {
        let log = self.log.position().await?;
        let bus = self.bus.position();
        let mut announced = 0;
        if log.seq > bus.seq {
            // At the widening the bus stands at; the later widenings are announced below.
            let missed = self
                .log
                .updates_between(bus.seq, log.seq, bus.widen_seq, Box::new(|_| true))
                .await?;
            for update in missed {
                self.bus.announce_update(Prepared::new(update));
                announced += 1;
            }
        }
        // One widening at a time: a subscriber takes each `widen_seq` once.
        for g in bus.widen_seq + 1..=log.widen_seq {
            for (update, from_percent) in self.log.widened_between(log.seq, g - 1, g).await? {
                self.bus
                    .announce_widening(Prepared::new(update), from_percent, g);
                announced += 1;
            }
        }
        Ok(announced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::distributor::Position;
    use crate::core::distributor::bus::{Live, Subscription};
    use crate::core::distributor::fanout::Hub;
    use crate::core::store::memory::update_log::MemoryUpdateLog;

    fn service() -> (Service, Arc<dyn Bus>) {
        let log: Arc<dyn UpdateLog> = Arc::new(MemoryUpdateLog::new());
        let bus: Arc<dyn Bus> = Arc::new(Hub::new(Position::default(), None, 16));
        let anonymizer = Anonymizer::from_key(&[7; 32]);
        let metrics = Arc::new(Metrics::default());
        (Service::new(log, bus.clone(), anonymizer, metrics), bus)
    }

    fn notice(target: Option<&str>, percent: Option<u8>) -> PublishRequest {
        PublishRequest {
            update_type: Some("notice".into()),
            payload: Some(json!({"message": "m"})),
            target_orch: target.map(str::to_owned),
            rollout_percent: percent.map(Value::from),
            ..PublishRequest::default()
        }
    }

    #[tokio::test]
    async fn publishes_rolls_back_and_widens_without_a_transport() {
        let (service, bus) = service();
        let Subscription { live: mut rx, .. } = bus.subscribe_from(Position::default());

        let a = service
            .publish(notice(Some("orch-1"), Some(10)))
            .await
            .unwrap();
        assert_eq!(a.seq, 1);
        match rx.recv().await.unwrap() {
            Live::Update(p) => {
                assert_eq!(p.update.envelope, a);
                assert_eq!(p.update.initial_percent, Some(10));
                assert!(
                    p.update
                        .target_orch_hash
                        .as_deref()
                        .unwrap()
                        .starts_with("orch_")
                );
            }
            other => panic!("{other:?}"),
        }

        let undo = service.rollback("1").await.unwrap();
        assert_eq!(undo.seq, 2);
        assert_eq!(undo.update_type, UpdateType::Rollback);
        assert_eq!(undo.payload["update_id"], json!(a.update_id));
        assert_eq!(
            undo.target_orch.as_deref(),
            Some("orch-1"),
            "undoes where it went"
        );
        assert!(matches!(
            service.rollback(&undo.update_id).await,
            Err(ServiceError::InvalidUpdate(FieldError {
                field: "payload.update_id",
                ..
            }))
        ));
        assert!(matches!(
            service.rollback("nope").await,
            Err(ServiceError::InvalidUpdate(_))
        ));
        assert!(matches!(
            service.publish(PublishRequest::default()).await,
            Err(ServiceError::InvalidUpdate(FieldError {
                field: "update_type",
                ..
            }))
        ));

        let w = service.widen(&a.update_id, 50).await.unwrap();
        assert_eq!(
            (w.previous_rollout_percent, w.update.rollout_percent),
            (Some(10), Some(50))
        );
        assert!(matches!(
            service.widen("1", 40).await,
            Err(ServiceError::Log(Error::NotWider { .. }))
        ));
        assert!(matches!(
            service.widen("nope", 40).await,
            Err(ServiceError::Log(Error::NotFound(_)))
        ));
        assert!(matches!(
            service.widen("1", 0).await,
            Err(ServiceError::InvalidRequest(_))
        ));
        assert_eq!(
            bus.position(),
            Position {
                seq: 2,
                widen_seq: 1
            }
        );
    }

    #[tokio::test]
    async fn services_sharing_a_log_announce_each_others_commits_in_order() {
        let log: Arc<dyn UpdateLog> = Arc::new(MemoryUpdateLog::new());
        let anonymizer = Anonymizer::from_key(&[7; 32]);
        let node = || {
            let bus: Arc<dyn Bus> = Arc::new(Hub::new(Position::default(), None, 64));
            let metrics = Arc::new(Metrics::default());
            (
                Service::new(log.clone(), bus.clone(), anonymizer.clone(), metrics),
                bus,
            )
        };
        let (a, _) = node();
        let (b, b_bus) = node();
        let Subscription { live: mut rx, .. } = b_bus.subscribe_from(Position::default());
        let seqs = |rx: &mut tokio::sync::broadcast::Receiver<Live>| {
            let mut out = Vec::new();
            while let Ok(item) = rx.try_recv() {
                out.push(match item {
                    Live::Update(p) => format!("u{}", p.update.envelope.seq),
                    Live::Widened {
                        update, widen_seq, ..
                    } => format!("w{widen_seq}:{}", update.update.envelope.seq),
                });
            }
            out
        };

        a.publish(notice(None, Some(10))).await.unwrap();
        a.publish(notice(None, Some(20))).await.unwrap();
        assert!(seqs(&mut rx).is_empty(), "b has not looked yet");
        // b's own publish gets seq 3: a's two come first, from the log, in order.
        assert_eq!(b.publish(notice(None, None)).await.unwrap().seq, 3);
        assert_eq!(seqs(&mut rx), ["u1", "u2", "u3"]);

        a.widen("1", 50).await.unwrap();
        a.widen("2", 60).await.unwrap();
        a.publish(notice(None, None)).await.unwrap();
        assert_eq!(b.follow_log().await.unwrap(), 3);
        assert_eq!(seqs(&mut rx), ["u4", "w1:1", "w2:2"]);
        assert_eq!(
            b_bus.position(),
            Position {
                seq: 4,
                widen_seq: 2
            }
        );
        assert_eq!(b.follow_log().await.unwrap(), 0, "nothing twice");
    }
}
