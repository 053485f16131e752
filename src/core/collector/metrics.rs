//! The collector's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::store::StoreMetrics;

/// Label of rejected records.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Machine code of the rejection (`invalid_record`, `too_large`, ...).
    pub reason: &'static str,
}

/// Label of OTLP counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabel {
    /// `span` or `log record`.
    pub signal: &'static str,
}

/// Label of PII findings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PiiTypeLabel {
    /// The kind of personal data (`email`, `phone`, ...), never a value.
    pub kind: &'static str,
}

/// Labels of analyze calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnalyzeLabels {
    /// `free` or `premium`.
    pub tier: &'static str,
    /// `llm` or `heuristic`.
    pub source: &'static str,
}

/// Every metric the collector exports.
pub struct Metrics {
    registry: Registry,
    /// Records committed.
    pub ingested: Counter,
    /// Records (or requests, when the body could not be split) refused, by reason.
    pub rejected: Family<Reason, Counter>,
    /// Records per accepted ingest request.
    pub batch_size: Histogram,
    /// Records waiting for the writer, sampled at scrape time.
    pub queue_depth: Gauge,
    /// Ingest stream messages not yet in the store (JetStream buffer; 0 without one).
    pub buffer_lag_messages: Gauge,
    /// Their bytes.
    pub buffer_lag_bytes: Gauge,
    /// Analyze calls by tier and summary source.
    pub analyze: Family<AnalyzeLabels, Counter>,
    /// Records deleted by retention.
    pub retention_deleted: Counter,
    /// Conversations newly stored by `POST /ingest/conversations`.
    pub conversations_ingested: Counter,
    /// Conversations resent with an id already stored (acknowledged, nothing stored).
    pub conversations_duplicate: Counter,
    /// Conversations (or requests, when the body could not be split) refused, by reason.
    pub conversations_rejected: Family<Reason, Counter>,
    /// Fields of refused conversations that held personal data, by its kind.
    pub pii_findings: Family<PiiTypeLabel, Counter>,
    /// Conversations deleted by retention.
    pub retention_deleted_conversations: Counter,
    /// Spans and log records committed from OTLP, by signal.
    pub otlp_accepted: Family<SignalLabel, Counter>,
    /// OTLP requests (undecodable, wrong type) or spans/log records refused, by reason.
    pub otlp_rejected: Family<Reason, Counter>,
    /// OTLP attribute values left out of their record because they held personal data.
    pub otlp_content_dropped: Counter,
    /// Writer-side commit metrics.
    pub store: StoreMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phoenix");
        let ingested = Counter::default();
        let rejected = Family::<Reason, Counter>::default();
        let batch_size = Histogram::new([1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0]);
        let queue_depth = Gauge::default();
        let buffer_lag_messages = Gauge::default();
        let buffer_lag_bytes = Gauge::default();
        let analyze = Family::<AnalyzeLabels, Counter>::default();
        let retention_deleted = Counter::default();
        let conversations_ingested = Counter::default();
        let conversations_duplicate = Counter::default();
        let conversations_rejected = Family::<Reason, Counter>::default();
        let pii_findings = Family::<PiiTypeLabel, Counter>::default();
        let retention_deleted_conversations = Counter::default();
        let store = StoreMetrics::default();
        let otlp_accepted = Family::<SignalLabel, Counter>::default();
        let otlp_rejected = Family::<Reason, Counter>::default();
        let otlp_content_dropped = Counter::default();
        registry.register(
            "otlp_accepted",
            "Spans and log records committed from OTLP/HTTP, by signal",
            otlp_accepted.clone(),
        );
        registry.register(
            "otlp_rejected",
            "OTLP requests or spans/log records refused, by reason (invalid_span: refused in partial_success)",
            otlp_rejected.clone(),
        );
        registry.register(
            "otlp_content_dropped",
            "OTLP attribute values not stored because they held personal data (the record is kept)",
            otlp_content_dropped.clone(),
        );
        registry.register(
            "ingest_records",
            "Telemetry records committed",
            ingested.clone(),
        );
        registry.register(
            "ingest_rejected_records",
            "Telemetry records rejected, by reason",
            rejected.clone(),
        );
        registry.register(
            "ingest_batch_size_records",
            "Records per accepted ingest request",
            batch_size.clone(),
        );
        registry.register(
            "store_queue_depth_records",
            "Records waiting for the store's writer",
            queue_depth.clone(),
        );
        registry.register(
            "ingest_buffer_lag_messages",
            "Ingest stream (JetStream) messages acknowledged but not yet in the store; 0 without --nats-url",
            buffer_lag_messages.clone(),
        );
        registry.register(
            "ingest_buffer_lag_bytes",
            "Bytes of the ingest stream messages not yet in the store",
            buffer_lag_bytes.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Duration of one group commit",
            store.commit_seconds.clone(),
        );
        registry.register(
            "store_group_records",
            "Records per group commit",
            store.group_records.clone(),
        );
        registry.register(
            "analyze_calls",
            "POST /analyze calls by tier and summary source",
            analyze.clone(),
        );
        registry.register(
            "retention_deleted_records",
            "Records deleted by retention",
            retention_deleted.clone(),
        );
        registry.register(
            "ingest_conversations",
            "Conversations newly stored",
            conversations_ingested.clone(),
        );
        registry.register(
            "ingest_conversation_duplicates",
            "Conversations resent with an id already stored (nothing stored)",
            conversations_duplicate.clone(),
        );
        registry.register(
            "ingest_conversations_rejected",
            "Conversations rejected, by reason (pii_detected: raw personal data found)",
            conversations_rejected.clone(),
        );
        registry.register(
            "ingest_conversations_pii_findings",
            "Fields of refused conversations that held personal data, by kind (never values)",
            pii_findings.clone(),
        );
        registry.register(
            "retention_deleted_conversations",
            "Conversations deleted by retention",
            retention_deleted_conversations.clone(),
        );
        Metrics {
            registry,
            ingested,
            rejected,
            batch_size,
            queue_depth,
            buffer_lag_messages,
            buffer_lag_bytes,
            analyze,
            retention_deleted,
            conversations_ingested,
            conversations_duplicate,
            conversations_rejected,
            pii_findings,
            retention_deleted_conversations,
            otlp_accepted,
            otlp_rejected,
            otlp_content_dropped,
            store,
        }
    }
}

impl Metrics {
    /// Counts `n` rejected records under `reason`.
    pub fn reject(&self, reason: &'static str, n: usize) {
        self.rejected
            .get_or_create(&Reason { reason })
            .inc_by(n as u64);
    }

    /// Counts `n` rejected conversations under `reason`.
    pub fn reject_conversations(&self, reason: &'static str, n: usize) {
        self.conversations_rejected
            .get_or_create(&Reason { reason })
            .inc_by(n as u64);
    }

    /// Conversations rejected so far under `reason`.
    pub fn conversations_rejected(&self, reason: &'static str) -> u64 {
        self.conversations_rejected
            .get_or_create(&Reason { reason })
            .get()
    }

    /// PII findings so far of the kind `kind`.
    pub fn pii_findings(&self, kind: &'static str) -> u64 {
        self.pii_findings
            .get_or_create(&PiiTypeLabel { kind })
            .get()
    }

    /// Counts `n` refused OTLP requests or spans/log records under `reason`.
    pub fn reject_otlp(&self, reason: &'static str, n: usize) {
        if n > 0 {
            self.otlp_rejected
                .get_or_create(&Reason { reason })
                .inc_by(n as u64);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
