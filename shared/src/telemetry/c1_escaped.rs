//! The `LOG_FORMAT=json` lines with the C1 control characters (U+0080..U+009F) escaped.
//!
//! JSON requires only C0 controls to be escaped in a string, so serde writes U+009B (CSI, a
//! terminal's escape sequence in one character) as its two UTF-8 bytes. An operator who
//! `tail`s the JSON log in a terminal would have it run whatever a sender put in a logged
//! value. Outside strings JSON is ASCII, so the bytes `C2 80`..`C2 9F` can only be such a
//! character inside a string, and `\u0080`..`\u009f` is the same string to every reader.

use std::io;

use tracing_subscriber::fmt::MakeWriter;

/// A writer maker whose writers escape the C1 controls of what they are given.
pub(super) struct C1Escaped<M>(pub(super) M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for C1Escaped<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Escaping(self.0.make_writer_for(meta))
    }
}

/// Escapes on the way to `W`. Each call is given whole lines (json-subscriber writes a
/// line with one `write_all`), so a character is never split between two calls.
pub(super) struct Escaping<W>(W);

impl<W: io::Write> io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.contains(&0xc2) {
            return self.0.write(buf);
        }
        let mut escaped = Vec::with_capacity(buf.len() + 16);
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|&b| b == 0xc2) {
            match rest.get(at + 1) {
                Some(&c1 @ 0x80..=0x9f) => {
                    escaped.extend_from_slice(&rest[..at]);
                    // U+0080 + (byte - 0x80): the second byte is the code point.
                    io::Write::write_fmt(&mut escaped, format_args!("\\u{c1:04x}"))?;
                    rest = &rest[at + 2..];
                }
                _ => {
                    escaped.extend_from_slice(&rest[..=at]);
                    rest = &rest[at + 1..];
                }
            }
        }
        escaped.extend_from_slice(rest);
        self.0.write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn escaped(line: &[u8]) -> Vec<u8> {
        let mut out = Escaping(Vec::new());
        out.write_all(line).unwrap();
        out.0
    }

    #[test]
    fn escapes_c1_and_nothing_else() {
        let line =
            serde_json::to_vec(&serde_json::json!({"a": "x\u{9b}2J\u{80}é ¢ \u{a0}"})).unwrap();
        let out = escaped(&line);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"x\u009b2J\u0080é ¢ "#.to_owned() + "\u{a0}\"}"
        );
    }

    proptest! {
        /// Any JSON string reads back the same, and no C1 control is left in the bytes.
        #[test]
        fn any_line_reads_back_the_same(chars in prop::collection::vec(
            prop_oneof![any::<char>(), (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap())],
            0..40,
        )) {
            let value = Value::String(String::from_iter(chars));
            let out = escaped(&serde_json::to_vec(&value).unwrap());
            let text = String::from_utf8(out).unwrap();
            let c1 = text.chars().find(|c| ('\u{80}'..='\u{9f}').contains(c));
            prop_assert_eq!(c1, None);
            prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        }
    }
}
