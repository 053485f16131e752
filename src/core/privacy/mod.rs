//! The edge privacy pipeline of seed 000: PII detection and pseudonyms with a local vault
//! (`pii`), the edge Telemetrist that redacts, spools and sends conversations
//! (`telemetrist`), and the fine-tuning datasets made from stored conversations (`dataset`).
//! May depend on `shared`, `telemetry` and `store`.

pub mod dataset;
pub mod edge;
pub mod pii;
pub mod telemetrist;
