//! The agent scaffold: templates embedded in the binary, rendered into a new agent crate.
//!
//! Placeholders are `{{key}}` for a fixed set of keys, replaced in one pass, so anything else
//! between double braces (GitHub expressions such as `${{ runner.os }}`) is left alone and a
//! description containing braces is never expanded a second time.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::forge::playbook;

/// Version of the scaffold templates, recorded in every agent's `agent.json`.
pub const TEMPLATE_VERSION: &str = "1";

/// Where `phoenix spawn-agent` creates the repository, which decides its visibility.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentTier {
    /// Public repository.
    #[default]
    Free,
    /// Private repository.
    Paid,
    /// Private repository.
    Enterprise,
}

impl AgentTier {
    /// Free agents are public; paid and enterprise agents are private (seed).
    pub fn is_private(self) -> bool {
        !matches!(self, AgentTier::Free)
    }

    /// `free`, `paid` or `enterprise`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentTier::Free => "free",
            AgentTier::Paid => "paid",
            AgentTier::Enterprise => "enterprise",
        }
    }
}

/// How `src/generated.rs` came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Generated {
    /// Written by an LLM from the description and checked by the compiler and tests.
    Llm {
        /// The model that answered.
        model: String,
        /// Generations made (1 = right first time; more = repaired from compiler errors).
        attempts: u32,
    },
    /// The documented placeholder of `--no-llm`.
    Placeholder,
}

/// `agent.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentManifest {
    /// Repository and crate name.
    pub name: String,
    /// What the agent is for.
    pub description: String,
    /// Tier (visibility).
    pub tier: AgentTier,
    /// Scaffold template version.
    pub template_version: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// How the behaviour was produced.
    pub generated: Generated,
    /// The command the local forge's CI runs in a checkout of a pull request.
    pub test_command: String,
}

/// Why a name cannot be an agent's.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent name {name:?}: {reason}")]
pub struct InvalidName {
    /// The name given.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// Names Cargo or Phoenix's forge layout cannot use.
const RESERVED: &[&str] = &[
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "proc-macro",
    "self",
    "build",
    "deps",
    "examples",
    "incremental",
];

/// An agent name is a repository name and a crate name: 1–64 of `a-z 0-9 - _`, starting
/// with a letter, not ending with `-` or `_`.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let fail = |reason: &str| {
        Err(InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() || name.len() > 64 {
        return fail("use 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return fail("use only lowercase letters, digits, `-` and `_`");
    }
    if name.ends_with(['-', '_']) {
        return fail("do not end with `-` or `_`");
    }
    if RESERVED.contains(&name) {
        return fail("the name is reserved by Cargo");
    }
    Ok(())
}

/// One file of the scaffold.
#[derive(Debug, Clone)]
pub struct File {
    /// Path inside the repository.
    pub path: &'static str,
    /// Contents.
    pub contents: String,
}

/// What the scaffold is rendered from.
#[derive(Debug, Clone)]
pub struct ScaffoldInput<'a> {
    /// The agent's manifest (`agent.json`).
    pub manifest: &'a AgentManifest,
    /// `src/generated.rs`, or `None` for the placeholder.
    pub generated_code: Option<&'a str>,
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/Cargo.toml"
        )),
    ),
    (
        ".gitignore",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/gitignore"
        )),
    ),
    (
        "README.md",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/README.md"
        )),
    ),
    (
        "skills.json",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/skills.json"
        )),
    ),
    (
        ".github/workflows/ci.yml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/github/ci.yml"
        )),
    ),
    (
        "src/main.rs",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/src/main.rs"
        )),
    ),
    (
        "src/template_agent.rs",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/agent/src/template_agent.rs"
        )),
    ),
];

const PLACEHOLDER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/templates/agent/src/generated_placeholder.rs"
));

/// Every file of a new agent, rendered.
pub fn render(input: &ScaffoldInput<'_>) -> Result<Vec<File>, serde_json::Error> {
    let m = input.manifest;
    let one_line = m
        .description
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let vars: Vec<(&str, String)> = vec![
        ("name", m.name.clone()),
        ("crate_name", m.name.clone()),
        (
            "description_toml",
            toml::Value::String(one_line.clone()).to_string(),
        ),
        ("description_md", m.description.trim().to_owned()),
        ("description_comment", one_line),
        ("template_version", m.template_version.clone()),
        (
            "generated_note",
            match &m.generated {
                Generated::Llm { model, attempts } => {
                    format!("by {model}, {attempts} generation(s), checked by `cargo test`")
                }
                Generated::Placeholder => "a placeholder: no code was generated".to_owned(),
            },
        ),
    ];
    let mut files: Vec<File> = TEMPLATES
        .iter()
        .map(|(path, text)| File {
            path,
            contents: substitute(text, &vars),
        })
        .collect();
    files.push(File {
        path: "src/generated.rs",
        contents: match input.generated_code {
            Some(code) => ensure_trailing_newline(code),
            None => substitute(PLACEHOLDER, &vars),
        },
    });
    files.push(File {
        path: "playbook.yaml",
        contents: playbook::TEMPLATE.to_owned(),
    });
    files.push(File {
        path: "agent.json",
        contents: format!("{}\n", serde_json::to_string_pretty(m)?),
    });
    Ok(files)
}

/// Writes `files` under `dir`.
pub fn write(dir: &Path, files: &[File]) -> std::io::Result<()> {
    for f in files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &f.contents)?;
    }
    Ok(())
}

fn ensure_trailing_newline(code: &str) -> String {
    let mut s = code.trim_end().to_owned();
    s.push('\n');
    s
}

/// Replaces `{{key}}` for the given keys in one left-to-right pass.
fn substitute(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let hit = vars.iter().find_map(|(k, v)| {
            after
                .strip_prefix(k)
                .and_then(|r| r.strip_prefix("}}"))
                .map(|r| (v, r))
        });
        match hit {
            Some((value, remaining)) => {
                out.push_str(value);
                rest = remaining;
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(description: &str, generated: Generated) -> AgentManifest {
        AgentManifest {
            name: "code-reviewer".to_owned(),
            description: description.to_owned(),
            tier: AgentTier::Free,
            template_version: TEMPLATE_VERSION.to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
            generated,
            test_command: "cargo test --offline".to_owned(),
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "rust-code-reviewer", "agent_2", "x9"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "Agent",
            "9lives",
            "a b",
            "a-",
            "test",
            "../x",
            "a.b",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rendering_keeps_github_expressions_and_escapes_the_description() {
        let m = manifest(
            "Reviews \"Rust\" code\nwith {{name}} braces",
            Generated::Placeholder,
        );
        let files = render(&ScaffoldInput {
            manifest: &m,
            generated_code: None,
        })
        .unwrap();
        let get = |p: &str| &files.iter().find(|f| f.path == p).unwrap().contents;
        let ci = get(".github/workflows/ci.yml");
        assert!(ci.contains("key: ${{ runner.os }}-cargo-${{ hashFiles('**/Cargo.lock') }}"));
        assert!(ci.contains("Test code-reviewer"));
        let cargo: toml::Table = get("Cargo.toml").parse().unwrap();
        assert_eq!(
            cargo["package"]["description"].as_str(),
            Some("Reviews \"Rust\" code with {{name}} braces")
        );
        assert!(get("src/generated.rs").starts_with("//! PLACEHOLDER"));
        let agent: serde_json::Value = serde_json::from_str(get("agent.json")).unwrap();
        assert_eq!(agent["generated"]["mode"], "placeholder");
        assert_eq!(agent["tier"], "free");
        let plain = manifest("Reviews Rust code", Generated::Placeholder);
        let files = render(&ScaffoldInput {
            manifest: &plain,
            generated_code: None,
        })
        .unwrap();
        for f in &files {
            for key in [
                "{{name}}",
                "{{crate_name}}",
                "{{template_version}}",
                "{{description",
            ] {
                assert!(!f.contents.contains(key), "{} still holds {key}", f.path);
            }
        }
    }

    #[test]
    fn substitution_is_single_pass() {
        let vars = vec![("a", "{{b}}".to_owned()), ("b", "no".to_owned())];
        assert_eq!(substitute("x{{a}}y{{c}}z{{", &vars), "x{{b}}y{{c}}z{{");
    }
}
