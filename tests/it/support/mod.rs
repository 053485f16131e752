pub mod collector;
pub mod fake_llm;
