//! The hive (seed 001, "Hive/Queen Supervisor"): a queen runs N workers that each ask an LLM
//! for an improvement proposal concurrently, supervises them (deadline, bounded retries,
//! panics, cancellation), drops duplicate proposals and can ask for a ranked synthesis.
//!
//! Depends on `shared::llm`, `updates` (what a proposal publishes) and the collector's
//! insights (what workers read); no server or store.
//!
//! The queen talks to the LLM through [`ChatModel`], so tests can script failures, hangs and
//! panics per worker and attempt without a network or timing tricks.

pub mod dedup;
pub mod prompts;
pub mod proposal;
pub mod queen;
pub mod rank;

use std::future::Future;

pub use dedup::{Duplicate, DuplicateKind};
pub use prompts::{Brief, Perspective};
pub use proposal::{Proposal, ProposedUpdate};
pub use queen::{
    Counts, HiveConfig, HiveReport, Phase, Progress, WorkerError, WorkerReport, WorkerStatus, run,
};
pub use rank::{Ranked, Ranking, choose_for_publishing, rank};

use crate::core::shared::llm::{self, ChatRequest, ChatResponse, LlmClient};

/// Who is asking, so a scripted model can answer per worker and attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Worker number (1-based), or `None` for the queen's ranking request.
    pub worker: Option<usize>,
    /// Attempt number (1-based) of this worker or of the ranking.
    pub attempt: u32,
}

/// The LLM as the hive sees it: one chat request in, one answer or typed error out.
pub trait ChatModel: Send + Sync + 'static {
    /// Sends `request` on behalf of `call`.
    fn ask(
        &self,
        call: Call,
        request: ChatRequest,
    ) -> impl Future<Output = Result<ChatResponse, llm::Error>> + Send;
}

impl ChatModel for LlmClient {
    fn ask(
        &self,
        call: Call,
        request: ChatRequest,
    ) -> impl Future<Output = Result<ChatResponse, llm::Error>> + Send {
        tracing::debug!(worker = ?call.worker, attempt = call.attempt, "asking the LLM");
        self.chat(request)
    }
}
