//! What a JetStream ingest message holds: a JSON array of accepted records, exactly as the
//! store will write them (ids, times and the orch hash already assigned, so a redelivery
//! writes the same row). Payloads, tags and messages travel as the JSON text they arrived
//! as, never re-encoded. Records are packed into messages of at most a given size, so a
//! large request becomes several messages (each one PubAck'd before the 200).

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::core::telemetry::NewRecord;
use crate::core::telemetry::conversation::{Feedback, NewConversation};

/// One message's worth of records: its body and the `Nats-Msg-Id` JetStream de-duplicates by.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The JSON array.
    pub body: Vec<u8>,
    /// Derived from the records' ids, so publishing the same records again is one message.
    pub msg_id: String,
    /// Records in it.
    pub records: usize,
}

/// A record too large for one message: JetStream refuses messages above the server's
/// `max_payload`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "record {index} is {bytes} bytes once encoded; the ingest buffer takes at most {limit} \
     bytes per message (the NATS server's max_payload)"
)]
pub struct TooLarge {
    /// Position in the request.
    pub index: usize,
    /// Its encoded size.
    pub bytes: usize,
    /// The limit.
    pub limit: usize,
}

/// Packs encoded items into chunks of at most `limit` bytes, in order.
fn pack<T>(
    items: &[T],
    limit: usize,
    encode: impl Fn(&T, &mut Vec<u8>),
    id: impl Fn(&T) -> &str,
) -> Result<Vec<Chunk>, TooLarge> {
    let mut chunks = Vec::new();
    let mut body = Vec::with_capacity(limit.min(64 * 1024));
    let mut ids = Sha256::new();
    let mut records = 0;
    let mut item = Vec::new();
    let mut finish = |body: &mut Vec<u8>, ids: &mut Sha256, records: &mut usize| {
        body.push(b']');
        let digest = std::mem::take(ids).finalize();
        chunks.push(Chunk {
            body: std::mem::take(body),
            msg_id: hex::encode(&digest[..16]),
            records: std::mem::take(records),
        });
    };
    for (index, t) in items.iter().enumerate() {
        item.clear();
        encode(t, &mut item);
        // `[` + item + `]`: the smallest message this item can be in.
        if item.len() + 2 > limit {
            return Err(TooLarge {
                index,
                bytes: item.len(),
                limit,
            });
        }
        if records > 0 && body.len() + 1 + item.len() + 1 > limit {
            finish(&mut body, &mut ids, &mut records);
        }
        body.push(if records == 0 { b'[' } else { b',' });
        body.extend_from_slice(&item);
        ids.update(id(t).as_bytes());
        ids.update([0]);
        records += 1;
    }
    if records > 0 {
        finish(&mut body, &mut ids, &mut records);
    }
    Ok(chunks)
}

/// Appends `,"key":` and `value` as a JSON string.
fn field(out: &mut Vec<u8>, key: &str, value: &impl serde::Serialize) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value).expect("strings and numbers serialize");
}

/// Appends `,"key":` and `json`, which is already JSON text.
fn raw(out: &mut Vec<u8>, key: &str, json: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(json.as_bytes());
}

fn encode_record(r: &NewRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, &r.id).expect("strings serialize");
    field(out, "ts", &r.ts_unix);
    field(out, "rx", &r.received_unix);
    field(out, "kind", &r.kind);
    field(out, "level", &r.level);
    field(out, "orch", &r.orch_hash);
    field(out, "path", &r.agent_path);
    if let Some(tags) = &r.tags_json {
        raw(out, "tags", tags);
    }
    raw(out, "payload", &r.payload_json);
    out.push(b'}');
}

fn encode_conversation(c: &NewConversation, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, &c.conversation_id).expect("strings serialize");
    field(out, "ts", &c.ts_unix);
    field(out, "rx", &c.received_unix);
    field(out, "orch", &c.orch_hash);
    field(out, "path", &c.agent_path);
    field(out, "feedback", &c.feedback.map(Feedback::as_str));
    field(out, "score", &c.score);
    field(out, "prompt_key", &c.prompt_key);
    raw(out, "messages", &c.messages_json);
    out.push(b'}');
}

/// Telemetry records as messages of at most `limit` bytes.
pub fn telemetry_chunks(records: &[NewRecord], limit: usize) -> Result<Vec<Chunk>, TooLarge> {
    pack(records, limit, encode_record, |r| &r.id)
}

/// Conversations as messages of at most `limit` bytes.
pub fn conversation_chunks(
    conversations: &[NewConversation],
    limit: usize,
) -> Result<Vec<Chunk>, TooLarge> {
    pack(conversations, limit, encode_conversation, |c| {
        &c.conversation_id
    })
}

#[derive(Deserialize)]
struct WireRecord {
    id: String,
    ts: i64,
    rx: i64,
    kind: String,
    level: Option<String>,
    orch: Option<String>,
    path: Option<String>,
    tags: Option<Box<RawValue>>,
    payload: Box<RawValue>,
}

#[derive(Deserialize)]
struct WireConversation {
    id: String,
    ts: i64,
    rx: i64,
    orch: Option<String>,
    path: Option<String>,
    feedback: Option<Feedback>,
    score: Option<f64>,
    prompt_key: Option<String>,
    messages: Box<RawValue>,
}

/// The records of a telemetry message.
pub fn decode_telemetry(body: &[u8]) -> Result<Vec<NewRecord>, serde_json::Error> {
    let wire: Vec<WireRecord> = serde_json::from_slice(body)?;
    Ok(wire
        .into_iter()
        .map(|w| NewRecord {
            id: w.id,
            ts_unix: w.ts,
            received_unix: w.rx,
            kind: w.kind,
            level: w.level,
            orch_hash: w.orch,
            agent_path: w.path,
            tags_json: w.tags.map(|t| t.get().to_owned()),
            payload_json: w.payload.get().to_owned(),
        })
        .collect())
}

/// The conversations of a conversations message.
pub fn decode_conversations(body: &[u8]) -> Result<Vec<NewConversation>, serde_json::Error> {
    let wire: Vec<WireConversation> = serde_json::from_slice(body)?;
    Ok(wire
        .into_iter()
        .map(|w| NewConversation {
            conversation_id: w.id,
            ts_unix: w.ts,
            received_unix: w.rx,
            orch_hash: w.orch,
            agent_path: w.path,
            feedback: w.feedback,
            score: w.score,
            messages_json: w.messages.get().to_owned(),
            prompt_key: w.prompt_key,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, payload: &str) -> NewRecord {
        NewRecord {
            id: format!("id-{i}"),
            ts_unix: 1_700_000_000 + i as i64,
            received_unix: 1_700_000_100,
            kind: "llm_call".to_owned(),
            level: i.is_multiple_of(2).then(|| "info".to_owned()),
            orch_hash: Some("orch_0123456789abcdef".to_owned()),
            agent_path: Some("support/\"quoted\"\n".to_owned()),
            tags_json: i.is_multiple_of(3).then(|| r#"["a","b"]"#.to_owned()),
            payload_json: payload.to_owned(),
        }
    }

    fn same(a: &NewRecord, b: &NewRecord) -> bool {
        (
            &a.id,
            a.ts_unix,
            a.received_unix,
            &a.kind,
            &a.level,
            &a.orch_hash,
            &a.agent_path,
            &a.tags_json,
            &a.payload_json,
        ) == (
            &b.id,
            b.ts_unix,
            b.received_unix,
            &b.kind,
            &b.level,
            &b.orch_hash,
            &b.agent_path,
            &b.tags_json,
            &b.payload_json,
        )
    }

    #[test]
    fn records_round_trip_with_their_json_text_verbatim() {
        let records: Vec<NewRecord> = (0..50)
            .map(|i| record(i, r#"{ "a" : 1.50, "é": "\u00e9" }"#))
            .collect();
        let chunks = telemetry_chunks(&records, 1 << 20).unwrap();
        assert_eq!(chunks.len(), 1);
        let back = decode_telemetry(&chunks[0].body).unwrap();
        assert_eq!(back.len(), records.len());
        assert!(records.iter().zip(&back).all(|(a, b)| same(a, b)));
    }

    #[test]
    fn chunks_respect_the_limit_keep_order_and_have_stable_ids() {
        let records: Vec<NewRecord> = (0..200).map(|i| record(i, r#"{"x":1}"#)).collect();
        let limit = 2_000;
        let chunks = telemetry_chunks(&records, limit).unwrap();
        assert!(chunks.len() > 5);
        assert!(chunks.iter().all(|c| c.body.len() <= limit));
        let back: Vec<NewRecord> = chunks
            .iter()
            .flat_map(|c| decode_telemetry(&c.body).unwrap())
            .collect();
        assert!(records.iter().zip(&back).all(|(a, b)| same(a, b)));
        assert_eq!(back.len(), 200);
        assert_eq!(chunks.iter().map(|c| c.records).sum::<usize>(), 200);
        let again = telemetry_chunks(&records, limit).unwrap();
        let ids = |c: &[Chunk]| c.iter().map(|c| c.msg_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&chunks), ids(&again));
        let mut distinct = ids(&chunks);
        distinct.dedup();
        assert_eq!(distinct.len(), chunks.len());
    }

    #[test]
    fn a_record_larger_than_a_message_is_named() {
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(5_000));
        let records = vec![record(0, "{}"), record(1, &big)];
        let err = telemetry_chunks(&records, 4_096).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.to_string().contains("record 1"));
    }

    #[test]
    fn conversations_round_trip() {
        let c = NewConversation {
            conversation_id: "conv-1".to_owned(),
            ts_unix: 5,
            received_unix: 6,
            orch_hash: None,
            agent_path: Some("a/b".to_owned()),
            feedback: Some(Feedback::Negative),
            score: Some(0.25),
            messages_json: r#"[{"role":"user","content":"hi"}]"#.to_owned(),
            prompt_key: Some("k".to_owned()),
        };
        let chunks = conversation_chunks(std::slice::from_ref(&c), 1 << 16).unwrap();
        assert_eq!(decode_conversations(&chunks[0].body).unwrap(), vec![c]);
    }
}
