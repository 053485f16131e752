//! PLACEHOLDER: no code was generated for this agent (`phoenix spawn-agent --no-llm`).
//!
//! Description: {{description_comment}}
//!
//! Replace `run` with the agent's behaviour; `agent.json` marks this file as a placeholder
//! (`"generated": {"mode": "placeholder"}`) until then.

/// The agent's behaviour: answers one input.
pub fn run(input: &str) -> String {
    format!("{{name}} (placeholder) received {} byte(s) of input", input.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_answers() {
        assert!(run("hello").contains("5 byte(s)"));
    }
}
