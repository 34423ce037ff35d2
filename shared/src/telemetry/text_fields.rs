//! The fields of a `LOG_FORMAT=text` line, written exactly as tracing-subscriber's
//! `DefaultFields` writes them (`name="value" n=5`, the message first and bare), only
//! faster for the values every answer line carries: plain strings, integers, booleans.
//!
//! The default writes each field through `core::fmt` twice over (the name painted for a
//! terminal, the value through `Debug`, strings char by char); that was most of the
//! ingress's answer line, about 1.6 µs of a webhook's CPU (BENCHMARKS.md). A string of
//! printable ASCII without `"` or `\` is its own `Debug` inside quotes, and an integer its
//! own digits, so those are copied as they are. Other values are written with `Debug` as the
//! default writes them, and errors (their sources) and a terminal's colours are left to
//! `DefaultVisitor` itself, so the output stays the default's byte for byte (`tests` below
//! compare the two).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::{RecordFields, VisitOutput as _},
    fmt::{
        FormatFields,
        format::{DefaultVisitor, Writer},
    },
};

/// `DefaultFields`' output, with fast paths; see the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            // A terminal: colours, and no hurry.
            let mut visitor = DefaultVisitor::new(writer, true);
            fields.record(&mut visitor);
            return visitor.finish();
        }
        let mut visitor = FastVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FastVisitor<'writer> {
    writer: Writer<'writer>,
    is_empty: bool,
    result: fmt::Result,
}

impl FastVisitor<'_> {
    /// The space before every field but the first, as `DefaultVisitor` writes it.
    fn pad(&mut self) -> fmt::Result {
        if std::mem::take(&mut self.is_empty) {
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    /// Writes the separating space (if needed) and `name=`, as `DefaultVisitor` does
    /// without colours; `false` for a field it leaves out (`log.*`: tracing-log's metadata,
    /// already on the line).
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .pad()
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        true
    }

    /// `name=text`, the text as it is (digits, `true`, `false`).
    fn bare(&mut self, field: &Field, text: &str) {
        if self.result.is_ok() && self.name(field) && self.result.is_ok() {
            self.result = self.writer.write_str(text);
        }
    }
}

/// `Debug` of `s` is `"s"`: printable ASCII, nothing `Debug` escapes.
fn is_plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// tracing-subscriber's escaping of a message (its `EscapingWriter`: ESC, BEL, BS, FF, DEL
/// and the C1 controls, which could drive a terminal), with a fast path for a piece of text
/// that holds none of them (one check of its bytes instead of a write per char).
struct Escaping<'a, W> {
    inner: &'a mut W,
    sanitize: bool,
}

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // 0xc2 leads every C1 control in UTF-8 (U+0080..U+009F); other chars it leads
        // only take the slow path.
        let risky = |b: &u8| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2);
        if !self.sanitize || !s.as_bytes().iter().any(risky) {
            return self.inner.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.inner.write_str("\\x1b")?,
                '\x07' => self.inner.write_str("\\x07")?,
                '\x08' => self.inner.write_str("\\x08")?,
                '\x0c' => self.inner.write_str("\\x0c")?,
                '\x7f' => self.inner.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.inner, "\\u{{{:x}}}", ch as u32)?,
                _ => self.inner.write_char(ch)?,
            }
        }
        Ok(())
    }
}

impl Visit for FastVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        if self.name(field) && self.result.is_ok() {
            self.result = if is_plain(value) {
                self.writer
                    .write_char('"')
                    .and_then(|()| self.writer.write_str(value))
                    .and_then(|()| self.writer.write_char('"'))
            } else {
                write!(self.writer, "{value:?}")
            };
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.bare(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.bare(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.bare(field, if value { "true" } else { "false" });
    }

    /// An error and its sources: `DefaultVisitor`'s own, continuing this line.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        visitor.record_error(field, value);
        self.result = visitor.finish();
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        // The message: bare, with what could drive a terminal escaped as the default does.
        if field.name() == "message" {
            let sanitize = self.writer.sanitizes_ansi_escapes();
            self.result = self.pad().and_then(|()| {
                let mut escaping = Escaping {
                    inner: &mut self.writer,
                    sanitize,
                };
                write!(escaping, "{value:?}")
            });
            return;
        }
        // What `DefaultVisitor` writes without colours, without its painting of the name.
        if self.name(field) && self.result.is_ok() {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use proptest::prelude::*;
    use tracing_subscriber::{fmt::format::DefaultFields, layer::SubscriberExt as _};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The text `f` logs with the default field formatter and with ours (no time, no
    /// colours: the binaries' text format otherwise).
    fn both(f: impl Fn()) -> (String, String) {
        let default = Buf::default();
        let ours = Buf::default();
        let (d, o) = (default.clone(), ours.clone());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .fmt_fields(DefaultFields::new())
                    .with_writer(move || d.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .fmt_fields(TextFields)
                    .with_writer(move || o.clone()),
            );
        tracing::subscriber::with_default(subscriber, f);
        let text = |b: Buf| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        (text(default), text(ours))
    }

    #[test]
    fn writes_what_the_default_writes() {
        let (default, ours) = both(|| {
            let error = io::Error::other("broker \"gone\"\x1b[2J");
            let span = tracing::info_span!("delivery", message_id = "order_paid:1", attempt = 2);
            let _entered = span.enter();
            tracing::info!(
                client_ip = %std::net::IpAddr::from([127, 0, 0, 1]),
                notification_type = "order_paid",
                order_id = Some("123"),
                user_id = None::<&str>,
                quoted = "say \"hi\"\\",
                escape = "\x1b[31mred\u{9b}\t\n",
                unicode = "плеер ✓",
                empty = "",
                status = 204u16,
                negative = -5i64,
                yes = true,
                elapsed_ms = 1.25f64,
                whole = 2.0f64,
                r#type = "raw",
                project_id = ?Some(18404u64),
                %error,
                "webhook answered"
            );
            tracing::warn!(reason = "x", "a message with {} and \x1b escape", "args");
            tracing::warn!("only a message");
            tracing::error!(count = 0u64);
        });
        assert!(default.contains("delivery{"), "{default}");
        assert_eq!(ours, default);
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_the_default_writes_it(value in any::<String>(), n in any::<i64>()) {
            let (default, ours) = both(|| tracing::info!(value = value.as_str(), n, "m"));
            prop_assert_eq!(ours, default);
        }
    }
}
