pub mod bin;
pub mod collector;
pub mod distributor;
pub mod fake_conversations;
pub mod fake_github;
pub mod fake_llm;
pub mod full_queue;
pub mod services;
