//! A compact binary form of a set of cells, for a backend that stores a group's cells as one
//! value until they are folded (PostgreSQL's `rollup_pending`): one small row per commit
//! instead of a wide row per cell.
//!
//! Layout (integers as LEB128 varints, signed ones zig-zagged; floats as 8 bytes LE):
//! `VERSION`, the distinct strings (count, then length + UTF-8 each), then the cells
//! (count, then per cell: minute, agent/kind/model as string indices, records, errors,
//! the non-zero latency buckets as (index, count) pairs, latency sum, tokens in/out, cost).

use std::collections::{BTreeMap, HashMap};

use super::{Cell, CellKey, Histogram, LATENCY_BUCKETS};

/// The first byte of every encoded value.
const VERSION: u8 = 1;

/// Why encoded cells could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable rollup cells at byte {at}: {what}")]
pub struct CodecError {
    /// Offset where reading stopped.
    pub at: usize,
    /// What was wrong there.
    pub what: &'static str,
}

/// Encodes `cells`.
pub fn encode(cells: &BTreeMap<CellKey, Cell>) -> Vec<u8> {
    let mut strings: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, u64> = HashMap::new();
    let mut keys: Vec<[u64; 3]> = Vec::with_capacity(cells.len());
    for k in cells.keys() {
        let mut ids = [0; 3];
        for (id, s) in ids.iter_mut().zip([&k.agent_path, &k.kind, &k.model]) {
            *id = *index.entry(s.as_str()).or_insert_with(|| {
                strings.push(s.as_str());
                strings.len() as u64 - 1
            });
        }
        keys.push(ids);
    }
    let mut out = Vec::with_capacity(16 + cells.len() * 48);
    out.push(VERSION);
    put_uint(&mut out, strings.len() as u64);
    for s in &strings {
        put_uint(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    put_uint(&mut out, cells.len() as u64);
    for ((key, cell), [agent, kind, model]) in cells.iter().zip(keys) {
        put_int(&mut out, key.minute);
        put_uint(&mut out, agent);
        put_uint(&mut out, kind);
        put_uint(&mut out, model);
        put_uint(&mut out, cell.records);
        put_uint(&mut out, cell.errors);
        let buckets = cell.latency.0.iter().filter(|n| **n > 0).count();
        put_uint(&mut out, buckets as u64);
        for (i, n) in cell.latency.0.iter().enumerate().filter(|(_, n)| **n > 0) {
            put_uint(&mut out, i as u64);
            put_uint(&mut out, *n);
        }
        out.extend_from_slice(&cell.latency_sum_ms.to_le_bytes());
        put_uint(&mut out, cell.tokens_in);
        put_uint(&mut out, cell.tokens_out);
        out.extend_from_slice(&cell.cost.to_le_bytes());
    }
    out
}

/// Decodes what [`encode`] wrote; anything else is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Vec<(CellKey, Cell)>, CodecError> {
    let mut r = Reader { bytes, at: 0 };
    if r.byte()? != VERSION {
        return Err(r.error("unknown version"));
    }
    let n_strings = r.count()?;
    let mut strings = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        let len = r.count()?;
        let raw = r.take(len)?;
        let s = std::str::from_utf8(raw).map_err(|_| r.error("a string is not UTF-8"))?;
        strings.push(s);
    }
    let n_cells = r.count()?;
    let mut cells = Vec::with_capacity(n_cells);
    for _ in 0..n_cells {
        let minute = r.int()?;
        let string = |r: &mut Reader| -> Result<String, CodecError> {
            let i = r.uint()?;
            strings
                .get(i as usize)
                .map(|s| (*s).to_owned())
                .ok_or_else(|| r.error("a string index is out of range"))
        };
        let key = CellKey {
            minute,
            agent_path: string(&mut r)?,
            kind: string(&mut r)?,
            model: string(&mut r)?,
        };
        let records = r.uint()?;
        let errors = r.uint()?;
        let mut latency = Histogram::default();
        for _ in 0..r.count()? {
            let i = r.uint()? as usize;
            if i >= LATENCY_BUCKETS {
                return Err(r.error("a latency bucket is out of range"));
            }
            latency.0[i] = r.uint()?;
        }
        let cell = Cell {
            records,
            errors,
            latency,
            latency_sum_ms: r.float()?,
            tokens_in: r.uint()?,
            tokens_out: r.uint()?,
            cost: r.float()?,
        };
        cells.push((key, cell));
    }
    if r.at != bytes.len() {
        return Err(r.error("bytes after the last cell"));
    }
    Ok(cells)
}

fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_int(out: &mut Vec<u8>, n: i64) {
    put_uint(out, ((n << 1) ^ (n >> 63)) as u64);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> CodecError {
        CodecError { at: self.at, what }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.error("ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("ends early"))?;
        let raw = &self.bytes[self.at..end];
        self.at = end;
        Ok(raw)
    }

    fn uint(&mut self) -> Result<u64, CodecError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.error("a number is too large"));
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.error("a number is too long"))
    }

    fn int(&mut self) -> Result<i64, CodecError> {
        let z = self.uint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    /// A length or count: no larger than the bytes left (each item takes at least one byte),
    /// so a forged count cannot make a huge allocation.
    fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.uint()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(self.error("a count is larger than the bytes left"));
        }
        Ok(n as usize)
    }

    fn float(&mut self) -> Result<f64, CodecError> {
        let raw = self.take(8)?;
        Ok(f64::from_le_bytes(raw.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reproducible pseudo-random cells (no random source: failures replay).
    fn cells(seed: u64, n: usize) -> BTreeMap<CellKey, Cell> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [
            "",
            "support",
            "support/triage",
            "llm_call",
            "gpt-4o",
            "é ü 漢",
            "tool",
        ];
        (0..n)
            .map(|_| {
                let key = CellKey {
                    minute: (next() as i64 >> 20) * 60,
                    agent_path: words[next() as usize % words.len()].to_owned(),
                    kind: words[next() as usize % words.len()].to_owned(),
                    model: words[next() as usize % words.len()].to_owned(),
                };
                let mut latency = Histogram::default();
                for _ in 0..next() % 5 {
                    latency.0[next() as usize % LATENCY_BUCKETS] += next() % 1000 + 1;
                }
                let cell = Cell {
                    records: next() % 100_000,
                    errors: next() % 10,
                    latency,
                    latency_sum_ms: (next() % 1_000_000) as f64 / 7.0,
                    tokens_in: next(),
                    tokens_out: u64::MAX - next() % 3,
                    cost: (next() % 10_000) as f64 / 1e4,
                };
                (key, cell)
            })
            .collect()
    }

    #[test]
    fn cells_come_back_exactly_as_encoded() {
        for seed in 0..200 {
            let original = cells(seed, (seed % 40) as usize);
            let decoded = decode(&encode(&original)).expect("decodes");
            let decoded: BTreeMap<CellKey, Cell> = decoded.into_iter().collect();
            assert_eq!(decoded, original, "seed {seed}");
        }
    }

    #[test]
    fn extreme_numbers_survive() {
        let mut original = BTreeMap::new();
        for minute in [i64::MIN, -1, 0, 1, i64::MAX] {
            let mut latency = Histogram::default();
            latency.0[LATENCY_BUCKETS - 1] = u64::MAX;
            original.insert(
                CellKey {
                    minute,
                    agent_path: String::new(),
                    kind: "k".into(),
                    model: String::new(),
                },
                Cell {
                    records: u64::MAX,
                    errors: 0,
                    latency,
                    latency_sum_ms: f64::MAX,
                    tokens_in: 0,
                    tokens_out: u64::MAX,
                    cost: -0.0,
                },
            );
        }
        let decoded: BTreeMap<_, _> = decode(&encode(&original)).unwrap().into_iter().collect();
        assert_eq!(decoded, original);
    }

    #[test]
    fn strings_shared_by_cells_are_written_once() {
        let with_path = |path: &str| -> BTreeMap<CellKey, Cell> {
            cells(7, 30)
                .into_iter()
                .map(|(mut k, c)| {
                    k.agent_path = path.to_owned();
                    (k, c)
                })
                .collect()
        };
        let short = encode(&with_path("a")).len();
        let long = encode(&with_path(&"a".repeat(1000))).len();
        // One copy of the longer path (and a two-byte length), however many cells name it.
        assert_eq!(long - short, 999 + 1);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let bytes = encode(&cells(3, 12));
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let _ = decode(&bad);
            }
        }
        let mut wrong_version = bytes;
        wrong_version[0] = 9;
        assert_eq!(decode(&wrong_version).unwrap_err().what, "unknown version");
    }

    #[test]
    fn a_forged_count_is_refused_before_allocating() {
        let mut bytes = vec![VERSION];
        put_uint(&mut bytes, u64::MAX >> 1);
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.what, "a count is larger than the bytes left");
    }
}
