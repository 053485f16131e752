//! Redacting a long text as a stream: a day of an agent's logs in one session, in time linear
//! in its length and memory bounded by the session's values, not by the input.
//!
//! The text is cut into pieces of about [`PIECE`] bytes, each redacted as one text with the
//! session's pseudonyms, so the spans and scratch buffers of one piece are all that is held.
//! A piece ends at a blank line when one comes within [`PIECE_MAX`] bytes (a value never spans
//! a paragraph: an address or a key block is within one), else at the end of a line; a
//! single line longer than that is one piece.

use std::io::{self, BufRead, Write};

use super::{Redactor, Report};

/// The size a piece grows to before it looks for its end.
pub const PIECE: usize = 64 * 1024;
/// The size from which a piece ends at the next line end even without a blank line.
pub const PIECE_MAX: usize = 1024 * 1024;

impl Redactor {
    /// Redacts everything `input` holds into `output`, piece by piece (see the module), adding
    /// what was replaced to `report`. Fails if the input is not UTF-8 or cannot be read, or the
    /// output cannot be written; what was written before stays written.
    pub fn redact_stream(
        &mut self,
        mut input: impl BufRead,
        mut output: impl Write,
        report: &mut Report,
    ) -> io::Result<()> {
        let mut piece = String::with_capacity(PIECE + 4096);
        loop {
            let before = piece.len();
            let read = input.read_line(&mut piece)?;
            let line = &piece[before..];
            let ends = read == 0
                || (piece.len() >= PIECE && line.trim().is_empty())
                || piece.len() >= PIECE_MAX;
            if ends && !piece.is_empty() {
                let out = self.redact_into(&piece, report);
                output.write_all(out.as_bytes())?;
                piece.clear();
            }
            if read == 0 {
                return output.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_redacted_as_its_pieces_are_with_one_sessions_pseudonyms() {
        let mut text = String::new();
        for i in 0..4000 {
            text.push_str(&format!(
                "Message {i}: please call Dan Johnson at dan.johnson{}@example.com.\n",
                i % 7
            ));
            if i % 500 == 0 {
                text.push('\n');
            }
        }
        assert!(text.len() > 3 * PIECE, "several pieces");
        let mut streamed = Vec::new();
        let mut report = Report::default();
        let mut r = Redactor::new();
        r.redact_stream(text.as_bytes(), &mut streamed, &mut report)
            .unwrap();
        let streamed = String::from_utf8(streamed).unwrap();
        assert!(!streamed.contains("Johnson"), "{}", &streamed[..200]);
        assert!(!streamed.contains("example.com"));
        // One person and seven addresses in the whole stream, whichever piece they were in.
        assert_eq!(streamed.lines().filter(|l| !l.is_empty()).count(), 4000);
        let pseudonyms: std::collections::BTreeSet<_> = report.pseudonyms.keys().collect();
        assert_eq!(pseudonyms.len(), 1 + 7, "{pseudonyms:?}");
        assert_eq!(report.total(), 8000);
        // The same text redacted at once in the same session gives the same text.
        let (whole, _) = r.redact(&text);
        assert_eq!(whole, streamed);
    }

    #[test]
    fn pieces_end_at_a_blank_line_past_the_size_or_at_a_line_past_the_maximum() {
        struct Pieces(Vec<usize>);
        impl Write for Pieces {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.push(buf.len());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let line = "no personal data on this line at all, just words\n";
        let mut text = line.repeat(PIECE / line.len() + 10);
        text.push('\n');
        let first = text.len();
        text.push_str(&line.repeat(PIECE_MAX / line.len() + 1));
        let second = text.len() - first;
        text.push_str("tail without newline");
        let mut pieces = Pieces(Vec::new());
        Redactor::new()
            .redact_stream(text.as_bytes(), &mut pieces, &mut Report::default())
            .unwrap();
        assert_eq!(pieces.0, [first, second, "tail without newline".len()]);
    }

    #[test]
    fn input_that_is_not_utf8_is_an_error() {
        let err = Redactor::new()
            .redact_stream(&b"ok\n\xff\xfe\n"[..], io::sink(), &mut Report::default())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
