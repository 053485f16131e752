//! The edge OTLP proxy of `phoenix telemetrist --otlp-listen`: a local OTLP/HTTP endpoint
//! that agents point their OpenTelemetry exporter at. Each export request is decoded,
//! redacted (`redact`: content attributes and log bodies, pseudonyms committed to the vault
//! first), committed to the spool, and only then answered 200; `forward` sends the spooled
//! requests to the collector's `/v1/traces` and `/v1/logs` until it has answered 200, each
//! leaving the spool once.
//!
//! `proxy` is the HTTP side; [`OtlpEdge`] the state it shares with `forward`: its own
//! connections to the vault and the spool (the conversation cycle keeps its own), and the
//! wake-up `forward` waits on while the spool is empty.

pub mod forward;
pub mod proxy;
pub mod redact;

use std::sync::{Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::sync::{Notify, watch};

use super::spool::{self, OtlpBatch, OtlpSignal, Spool};
use crate::core::privacy::pii::vault::{self, Vault};
use crate::core::server::{Listener, ServerLimits};
pub use forward::Forwarder;
pub use redact::{Redacted, SESSION_KEYS};

/// What the proxy accepts and how much it keeps.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// Largest request body on the wire (413 above).
    pub max_body_bytes: usize,
    /// Largest request body after gzip decoding (413 above).
    pub max_decoded_bytes: usize,
    /// Bytes of pending OTLP batches past which new requests get 503 with `Retry-After`.
    pub spool_limit_bytes: u64,
    /// One pseudonym session for everything (`--session`), instead of the per-record rule.
    pub session: Option<String>,
}

/// Why a request could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The vault failed: nothing was spooled, since nothing may leave unrevealable.
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] spool::Error),
    /// The spool holds `spool_limit_bytes` of batches the collector has not taken yet.
    #[error(
        "the edge spool holds {pending_bytes} bytes of OTLP batches not yet sent (limit {limit}); \
         retry once the collector has taken them"
    )]
    Full {
        /// Bytes pending.
        pending_bytes: u64,
        /// The limit.
        limit: u64,
    },
}

/// A decoded export request.
#[derive(Debug)]
pub enum Export {
    /// `POST /v1/traces`.
    Traces(ExportTraceServiceRequest),
    /// `POST /v1/logs`.
    Logs(ExportLogsServiceRequest),
}

/// What admitting one request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The spool id of the batch; `None` for a request without spans or log records.
    pub batch_id: Option<i64>,
    /// Its redaction.
    pub redacted: Redacted,
}

/// The state the proxy and the forwarder share.
#[derive(Debug)]
pub struct OtlpEdge {
    vault: Mutex<Vault>,
    spool: Mutex<Spool>,
    wake: Notify,
    options: OtlpOptions,
}

impl OtlpEdge {
    /// An edge over its own vault and spool connections.
    pub fn new(vault: Vault, spool: Spool, options: OtlpOptions) -> OtlpEdge {
        OtlpEdge {
            vault: Mutex::new(vault),
            spool: Mutex::new(spool),
            wake: Notify::new(),
            options,
        }
    }

    /// The options.
    pub fn options(&self) -> &OtlpOptions {
        &self.options
    }

    /// The spool, for one short operation (never held across an await).
    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic while it was held left no transaction open: each is committed or dropped.
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Redacts `export` (its pseudonyms committed to the vault), then commits it to the spool
    /// and wakes the forwarder. Blocking: run it off the async workers.
    pub fn admit(&self, export: Export) -> Result<Admitted, AdmitError> {
        let pending_bytes = self.spool().otlp_counts()?.pending_bytes;
        let limit = self.options.spool_limit_bytes;
        if pending_bytes >= limit {
            return Err(AdmitError::Full {
                pending_bytes,
                limit,
            });
        }
        let session = self.options.session.as_deref();
        let (signal, redacted, body) = {
            let mut vault = self.vault.lock().unwrap_or_else(PoisonError::into_inner);
            match export {
                Export::Traces(mut request) => {
                    let redacted = redact::redact_traces(&mut request, &mut vault, session)?;
                    (OtlpSignal::Traces, redacted, request.encode_to_vec())
                }
                Export::Logs(mut request) => {
                    let redacted = redact::redact_logs(&mut request, &mut vault, session)?;
                    (OtlpSignal::Logs, redacted, request.encode_to_vec())
                }
            }
        };
        if redacted.items == 0 {
            return Ok(Admitted {
                batch_id: None,
                redacted,
            });
        }
        let batch_id = self.spool().enqueue_otlp(&OtlpBatch {
            signal,
            items: redacted.items,
            sessions: redacted.sessions.clone(),
            body,
        })?;
        self.wake.notify_one();
        tracing::debug!(
            batch_id,
            signal = signal.as_str(),
            items = redacted.items,
            redacted = redacted.replaced.values().sum::<usize>(),
            "OTLP batch spooled"
        );
        Ok(Admitted {
            batch_id: Some(batch_id),
            redacted,
        })
    }
}

/// Serves the proxy on `listener` and forwards the spool through `client` until `stop`
/// turns true; then stops accepting, lets the requests under way finish their spool commit
/// (within `limits.shutdown_timeout`), abandons a send under way (its batches stay pending)
/// and returns.
pub async fn run(
    listener: Listener,
    edge: std::sync::Arc<OtlpEdge>,
    forwarder: Forwarder,
    limits: ServerLimits,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = proxy::router(edge.clone(), limits.decode_budget.clone());
    let mut server_stop = stop.clone();
    let server = crate::core::server::serve(listener, router, limits, async move {
        wait_for_stop(&mut server_stop).await;
    });
    let (served, ()) = tokio::join!(server, forwarder.run(edge, stop));
    served
}

async fn wait_for_stop(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // Nobody can ask any more: never stop.
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::core::privacy::pii::vault::VaultKey;

    fn edge(dir: &tempfile::TempDir, limit: u64) -> OtlpEdge {
        let vault = Vault::open(&dir.path().join("v.db"), &VaultKey::from_bytes([5; 32])).unwrap();
        let spool = Spool::open(&dir.path().join("s.db")).unwrap();
        OtlpEdge::new(
            vault,
            spool,
            OtlpOptions {
                max_body_bytes: 1 << 20,
                max_decoded_bytes: 1 << 20,
                spool_limit_bytes: limit,
                session: None,
            },
        )
    }

    fn export(prompt: &str) -> Export {
        Export::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![7; 16],
                        span_id: vec![1; 8],
                        attributes: vec![KeyValue {
                            key: "gen_ai.prompt".to_owned(),
                            value: Some(AnyValue {
                                value: Some(Any::StringValue(prompt.to_owned())),
                            }),
                            ..KeyValue::default()
                        }],
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        })
    }

    #[test]
    fn a_redacted_request_is_spooled_as_protobuf_and_a_full_spool_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(&dir, 1);
        let admitted = edge.admit(export("I'm Dan Johnson")).unwrap();
        assert_eq!(admitted.batch_id, Some(1));
        let pending = edge.spool().next_otlp(10, usize::MAX).unwrap();
        let stored = ExportTraceServiceRequest::decode(pending[0].body.as_slice()).unwrap();
        let value = &stored.resource_spans[0].scope_spans[0].spans[0].attributes[0].value;
        assert_eq!(
            value.as_ref().unwrap().value,
            Some(Any::StringValue("I'm USER_A".to_owned()))
        );
        assert!(matches!(
            edge.admit(export("again")),
            Err(AdmitError::Full { limit: 1, .. })
        ));
        let empty = Export::Logs(ExportLogsServiceRequest::default());
        let dir2 = tempfile::tempdir().unwrap();
        assert_eq!(self::edge(&dir2, 1).admit(empty).unwrap().batch_id, None);
    }
}
