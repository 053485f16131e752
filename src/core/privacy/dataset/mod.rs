//! Fine-tuning datasets from the collector's stored conversations: TRL and OpenAI JSONL,
//! supervised (`sft`) or preference pairs (`dpo`).
//!
//! Depends on `store` (the conversation trait), `telemetry::conversation` and `privacy::pii`.
//!
//! Every conversation's pseudonyms are renumbered canonically first (see [`prompt`]), so
//! identical prompts group together and a pair's prompt, chosen and rejected agree on who is
//! who by construction. Pairs follow the rule in [`pairs`]. Nothing here prints: the caller
//! gives the writer and gets a [`Summary`].

mod openai;
pub mod pairs;
pub mod prompt;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::core::store::{self, ConversationFilter, ConversationReader, ReadOrder};
use crate::core::telemetry::conversation::StoredConversation;
use pairs::{Rating, best_against_worse};
pub use prompt::{canonical_messages, prompt_key, split_final_turn};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// TRL conversational language modelling: `{"messages": [...]}`.
    Sft,
    /// TRL conversational preference: `{"prompt": [...], "chosen": [...], "rejected": [...]}`.
    Dpo,
    /// OpenAI supervised fine-tuning: `{"messages": [...]}` in the accepted shape.
    OpenaiSft,
    /// OpenAI preference fine-tuning: `{"input": {"messages"}, "preferred_output",
    /// "non_preferred_output"}`.
    OpenaiDpo,
}

impl Format {
    /// Whether lines are preference pairs.
    pub fn is_preference(self) -> bool {
        matches!(self, Format::Dpo | Format::OpenaiDpo)
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Writing the dataset failed.
    #[error("writing the dataset: {0}")]
    Write(#[source] std::io::Error),
}

/// What an export did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The format written.
    pub format: Format,
    /// Conversations in the database.
    pub stored: u64,
    /// Conversations the filters kept and the export read.
    pub read: u64,
    /// JSONL lines written.
    pub written: u64,
    /// Preference pairs among them (0 for supervised formats).
    pub pairs: u64,
    /// Conversations left out, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Pairs left out, by reason (OpenAI preference lines need one text reply per side).
    pub skipped_pairs: BTreeMap<&'static str, u64>,
    /// Changes made to fit the OpenAI format, by kind.
    pub converted: BTreeMap<&'static str, u64>,
}

/// How many conversations an export will read (the length of a progress bar).
pub fn planned(
    reader: &ConversationReader,
    format: Format,
    filter: &ConversationFilter,
) -> Result<u64, Error> {
    Ok(reader.count(filter, order(format))?)
}

fn order(format: Format) -> ReadOrder {
    if format.is_preference() {
        ReadOrder::ByPrompt
    } else {
        ReadOrder::Stored
    }
}

/// Writes the dataset as JSONL to `out`; `progress` gets the number of conversations read
/// so far, now and then.
pub fn export(
    reader: &ConversationReader,
    format: Format,
    filter: &ConversationFilter,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, Error> {
    let counts = reader.filter_counts(filter)?;
    let mut summary = Summary {
        format,
        stored: counts.stored,
        read: 0,
        written: 0,
        pairs: 0,
        skipped: BTreeMap::new(),
        skipped_pairs: BTreeMap::new(),
        converted: BTreeMap::new(),
    };
    for (reason, n) in [
        ("before_since", counts.before_since),
        ("unscored", counts.unscored),
        ("below_min_score", counts.below_min_score),
    ] {
        if n > 0 {
            summary.skipped.insert(reason, n);
        }
    }
    let mut w = Lines { out, summary };
    if format.is_preference() {
        // Conversations without a final assistant turn have no prompt key and are not read.
        let unpaired =
            reader.count(filter, ReadOrder::Stored)? - reader.count(filter, ReadOrder::ByPrompt)?;
        if unpaired > 0 {
            w.summary
                .skipped
                .insert("no_final_assistant_turn", unpaired);
        }
        let mut group: Vec<StoredConversation> = Vec::new();
        reader.for_each::<Error>(filter, ReadOrder::ByPrompt, |c| {
            if group.last().is_some_and(|g| g.prompt_key != c.prompt_key) {
                w.pairs(format, std::mem::take(&mut group))?;
            }
            group.push(c);
            w.summary.read += 1;
            tick(w.summary.read, progress);
            Ok(())
        })?;
        w.pairs(format, group)?;
    } else {
        reader.for_each::<Error>(filter, ReadOrder::Stored, |c| {
            w.summary.read += 1;
            w.supervised(format, &c)?;
            tick(w.summary.read, progress);
            Ok(())
        })?;
    }
    progress(w.summary.read);
    w.out.flush().map_err(Error::Write)?;
    Ok(w.summary)
}

fn tick(read: u64, progress: &mut dyn FnMut(u64)) {
    if read.is_multiple_of(256) {
        progress(read);
    }
}

/// The output and what has been written to it.
struct Lines<'a> {
    out: &'a mut dyn Write,
    summary: Summary,
}

impl Lines<'_> {
    fn line(&mut self, value: &Value) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.out, value).map_err(|e| Error::Write(e.into()))?;
        self.out.write_all(b"\n").map_err(Error::Write)?;
        self.summary.written += 1;
        Ok(())
    }

    fn skip(&mut self, reason: &'static str) {
        *self.summary.skipped.entry(reason).or_default() += 1;
    }

    fn supervised(&mut self, format: Format, c: &StoredConversation) -> Result<(), Error> {
        let messages = canonical_messages(&c.messages);
        let messages = match format {
            Format::OpenaiSft => {
                let mut converted = openai::Counts::new();
                openai::chat_example(&messages, &mut converted).inspect(|_| {
                    merge(&mut self.summary.converted, converted);
                })
            }
            _ if !messages.iter().any(|m| prompt::role(m) == "assistant") => {
                Err("no_assistant_message")
            }
            _ => Ok(messages),
        };
        match messages {
            Ok(messages) => self.line(&json!({ "messages": messages })),
            Err(reason) => {
                self.skip(reason);
                Ok(())
            }
        }
    }

    /// Pairs one group of conversations with the same prompt key.
    fn pairs(&mut self, format: Format, group: Vec<StoredConversation>) -> Result<(), Error> {
        // The key is a hash: split on the canonical prompts themselves, never trusting it alone.
        let mut prompts: Vec<SharedPrompt> = Vec::new();
        for c in group {
            let messages = canonical_messages(&c.messages);
            let Some((prompt, turn)) = split_final_turn(&messages) else {
                self.skip("no_final_assistant_turn");
                continue;
            };
            let rating = Rating {
                score: c.score,
                feedback: c.feedback,
                ts_unix: c.ts_unix,
                seq: c.seq,
            };
            match prompts.iter_mut().find(|g| g.prompt == prompt) {
                Some(g) => {
                    g.turns.push(turn.to_vec());
                    g.ratings.push(rating);
                }
                None => prompts.push(SharedPrompt {
                    prompt: prompt.to_vec(),
                    turns: vec![turn.to_vec()],
                    ratings: vec![rating],
                }),
            }
        }
        for SharedPrompt {
            prompt,
            turns,
            ratings,
        } in prompts
        {
            let pairing = best_against_worse(&ratings);
            for (_, why) in pairing.unpaired {
                self.skip(why.as_str());
            }
            for (chosen, rejected) in pairing.pairs {
                let (chosen, rejected) = (&turns[chosen], &turns[rejected]);
                let line = match format {
                    Format::OpenaiDpo => {
                        let mut converted = openai::Counts::new();
                        match openai::preference_example(&prompt, chosen, rejected, &mut converted)
                        {
                            Ok(line) => {
                                merge(&mut self.summary.converted, converted);
                                line
                            }
                            Err(reason) => {
                                *self.summary.skipped_pairs.entry(reason).or_default() += 1;
                                continue;
                            }
                        }
                    }
                    _ => json!({"prompt": prompt, "chosen": chosen, "rejected": rejected}),
                };
                self.line(&line)?;
                self.summary.pairs += 1;
            }
        }
        Ok(())
    }
}

/// Conversations with one canonical prompt: each one's final turn and rating, in read order.
struct SharedPrompt {
    prompt: Vec<Value>,
    turns: Vec<Vec<Value>>,
    ratings: Vec<Rating>,
}

fn merge(into: &mut BTreeMap<&'static str, u64>, from: openai::Counts) {
    for (k, n) in from {
        *into.entry(k).or_default() += n;
    }
}

/// A JSONL file written under a temporary name next to its destination and renamed over it
/// only once complete and on disk: readers never see half a dataset, and a failed export
/// leaves the previous file as it was.
pub struct AtomicFile {
    path: PathBuf,
    writer: BufWriter<tempfile::NamedTempFile>,
}

impl AtomicFile {
    /// Starts writing `path` (its directory must exist).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".phoenix-export-")
            .tempfile_in(dir)?;
        Ok(AtomicFile {
            path: path.to_owned(),
            writer: BufWriter::with_capacity(256 * 1024, tmp),
        })
    }

    /// Where the lines go until [`AtomicFile::commit`].
    pub fn writer(&mut self) -> &mut dyn Write {
        &mut self.writer
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> std::io::Result<()> {
        let tmp = self.writer.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}
