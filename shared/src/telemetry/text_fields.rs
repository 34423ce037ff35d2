//! The fields of a `LOG_FORMAT=text` line: tracing-subscriber's `DefaultFields` format
//! (`name="value" n=5`, the message first and bare), written faster, and one line per event
//! whatever the values hold.
//!
//! **One line.** `DefaultFields` writes a `%value` (`Display`) or `?value` (`Debug`) as it
//! is, control characters included, and escapes only a terminal's control codes in the
//! message. An error carrying sender text (a project id from the URL path, a game's
//! pretty-printed error body) then wrote a newline and a forged line after it, or an
//! escape sequence for the operator's terminal. Here every character of a value or a message
//! that `crate::terminal::is_unsafe` names (C0, DEL, C1, line separators, bidi controls) is
//! written escaped (`\n`, `\x1b`, `\u{9b}`, `\u{202e}`), so a line is one event and reads as
//! what it is. Strings (`value = s`) are quoted and escaped by `Debug` as before.
//!
//! **Faster.** The default writes each field through `core::fmt` twice over (the name
//! painted for a terminal, the value through `Debug`, strings char by char); that was most
//! of the ingress's answer line, about 1.6 µs of a webhook's CPU (BENCHMARKS.md). A string
//! of printable ASCII without `"` or `\` is its own `Debug` inside quotes, and an integer
//! its own digits, so those are copied as they are.
//!
//! Apart from the escaping the output is the default's byte for byte, with and without a
//! terminal's colours (`tests` below compare the two).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FormatFields, format::Writer},
};

/// `DefaultFields`' output, one line per event and faster; see the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FastVisitor {
            colours: writer.has_ansi_escapes(),
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
    /// A terminal's: names in italics and a dimmed `=`, as the default paints them.
    colours: bool,
    is_empty: bool,
    result: fmt::Result,
}

/// nu-ansi-term's codes as `DefaultVisitor` paints a name: italic, then a dimmed `=`.
const ITALIC: &str = "\x1b[3m";
const DIMMED_EQUALS: &str = "\x1b[2m=\x1b[0m";
const RESET: &str = "\x1b[0m";

impl FastVisitor<'_> {
    /// The space before every field but the first, as `DefaultVisitor` writes it.
    fn pad(&mut self) -> fmt::Result {
        if std::mem::take(&mut self.is_empty) {
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    /// `text` painted as a field name when colours are on.
    fn italic(&mut self, text: &str) -> fmt::Result {
        if self.colours {
            self.writer.write_str(ITALIC)?;
            self.writer.write_str(text)?;
            self.writer.write_str(RESET)
        } else {
            self.writer.write_str(text)
        }
    }

    fn equals(&mut self) -> fmt::Result {
        let equals = if self.colours { DIMMED_EQUALS } else { "=" };
        self.writer.write_str(equals)
    }

    /// Writes the separating space (if needed) and `name=`, as `DefaultVisitor` does;
    /// `false` for a field it leaves out (`log.*`: tracing-log's metadata, already on the
    /// line).
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .pad()
            .and_then(|()| self.italic(name))
            .and_then(|()| self.equals());
        true
    }

    /// `name=text`, the text as it is (digits, `true`, `false`).
    fn bare(&mut self, field: &Field, text: &str) {
        if self.result.is_ok() && self.name(field) && self.result.is_ok() {
            self.result = self.writer.write_str(text);
        }
    }

    /// `value` written with its control characters escaped.
    fn escaped(&mut self, value: fmt::Arguments<'_>) -> fmt::Result {
        Escaping(&mut self.writer).write_fmt(value)
    }

    /// An error's sources after it, as the default lists them:
    /// ` name.sources=[first, second]`.
    fn sources(&mut self, field: &Field, error: &(dyn std::error::Error + 'static)) -> fmt::Result {
        let Some(mut source) = error.source() else {
            return Ok(());
        };
        self.writer.write_char(' ')?;
        self.italic(field.name())?;
        self.italic(".sources")?;
        self.equals()?;
        self.writer.write_char('[')?;
        loop {
            self.escaped(format_args!("{source}"))?;
            match source.source() {
                Some(next) => {
                    self.writer.write_str(", ")?;
                    source = next;
                }
                None => break,
            }
        }
        self.writer.write_char(']')
    }
}

/// `Debug` of `s` is `"s"`: printable ASCII, nothing `Debug` escapes.
fn is_plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Writes through to `W` with every character [`crate::terminal::is_unsafe`] names escaped:
/// C0 as `\n`, `\r`, `\t` or `\x1b` (tracing-subscriber's spelling of ESC), DEL as `\x7f`,
/// the rest (C1 controls, line separators, bidi controls) as `\u{9b}` (tracing-subscriber's
/// spelling of C1). A piece of text without any is written in one call (one check of its
/// bytes).
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !crate::terminal::may_hold_unsafe(s) {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                '\0'..='\x1f' | '\x7f' => write!(self.0, "\\x{:02x}", ch as u32)?,
                ch if crate::terminal::is_unsafe(ch) => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
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
                // `Debug` escapes every control character of a string.
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

    /// An error: `name=its Display`, then its sources, as the default writes them.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() && self.name(field) && self.result.is_ok() {
            self.result = self
                .escaped(format_args!("{value}"))
                .and_then(|()| self.sources(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        // The message: bare.
        if field.name() == "message" {
            self.result = self
                .pad()
                .and_then(|()| self.escaped(format_args!("{value:?}")));
            return;
        }
        if self.name(field) && self.result.is_ok() {
            self.result = self.escaped(format_args!("{value:?}"));
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

    /// The text `f` logs with the default field formatter and with ours (no time; with or
    /// without a terminal's colours).
    fn both_in(colours: bool, f: impl Fn()) -> (String, String) {
        let default = Buf::default();
        let ours = Buf::default();
        let (d, o) = (default.clone(), ours.clone());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colours)
                    .without_time()
                    .fmt_fields(DefaultFields::new())
                    .with_writer(move || d.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colours)
                    .without_time()
                    .fmt_fields(TextFields)
                    .with_writer(move || o.clone()),
            );
        tracing::subscriber::with_default(subscriber, f);
        let text = |b: Buf| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        (text(default), text(ours))
    }

    /// As the binaries write to a file or a pipe: no colours.
    fn both(f: impl Fn()) -> (String, String) {
        both_in(false, f)
    }

    /// An error with a source, as lapin's and reqwest's are.
    #[derive(Debug, thiserror::Error)]
    #[error("publish failed: {0}")]
    struct Outer(String, #[source] io::Error);

    /// Every shape of value the binaries log, none holding a control character.
    fn every_shape() {
        let error = io::Error::other("broker \"gone\"");
        let chained = Outer("a".into(), io::Error::other("connection reset"));
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
        tracing::warn!(error = &chained as &dyn std::error::Error, "with sources");
        tracing::warn!(reason = "x", "a message with {} and {}", "args", 5);
        tracing::warn!("only a message");
        tracing::error!(count = 0u64);
    }

    #[test]
    fn writes_what_the_default_writes() {
        let (default, ours) = both(every_shape);
        assert!(default.contains("delivery{"), "{default}");
        assert!(
            default.contains("error.sources=[connection reset]"),
            "{default}"
        );
        assert_eq!(ours, default);
    }

    #[test]
    fn paints_what_the_default_paints_on_a_terminal() {
        let (default, ours) = both_in(true, every_shape);
        assert!(
            default.contains(ITALIC) && default.contains(DIMMED_EQUALS),
            "{default:?}"
        );
        assert_eq!(ours, default);
    }

    /// Text a sender controls (`%` or `?`, in a message, in an error or its sources) can
    /// neither end the line, nor reach a terminal as a control code, nor reorder what the
    /// line reads. The default writes these raw: a forged line after the newline.
    #[test]
    fn control_characters_never_leave_the_line() {
        let forged = "1\n2026-12-02T01:00:00Z  INFO ingress: webhook answered\r\x1b[2J\x00\x7f\u{9b}\u{202e}\u{2028}";
        struct RawDebug(&'static str);
        impl fmt::Debug for RawDebug {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        let raw: &'static str = Box::leak(forged.to_owned().into_boxed_str());
        let chained = Outer(forged.into(), io::Error::other(forged));
        let log = || {
            tracing::warn!(error = %forged, "webhook refused");
            tracing::warn!(value = ?RawDebug(raw), "debug");
            tracing::warn!(error = &chained as &dyn std::error::Error, "with sources");
            tracing::warn!("message {forged}");
        };
        for colours in [false, true] {
            let (default, ours) = both_in(colours, log);
            assert!(
                default.lines().count() > 4,
                "the default forges lines: {default:?}"
            );
            assert_eq!(ours.lines().count(), 4, "{ours:?}");
            let body = ours.replace('\n', "");
            let stray = body
                .chars()
                .find(|c| crate::terminal::is_unsafe(*c) && !(colours && *c == '\x1b'));
            assert_eq!(stray, None, "{ours:?}");
            for escaped in [r"1\n2026-12-02", r"\r\x1b[2J\x00\x7f\u{9b}\u{202e}\u{2028}"] {
                assert_eq!(ours.matches(escaped).count(), 5, "{escaped} in {ours}");
            }
            // The only escape codes left on a terminal are the painting's own.
            assert!(!body.contains("\x1b[2J"), "{ours:?}");
        }
    }

    /// Any text, unsafe characters well represented (`any::<String>()` holds no control
    /// character, and a bidi control once in a blue moon).
    fn text() -> impl Strategy<Value = String> {
        let c1 = (0x80u32..0xa0).prop_map(|c| char::from_u32(c).expect("C1 is scalar"));
        let char = prop_oneof![
            3 => any::<char>(),
            1 => (0u8..0x20).prop_map(char::from),
            1 => Just('\x7f'),
            1 => c1,
            1 => prop::sample::select(vec!['\u{202e}', '\u{2066}', '\u{200f}', '\u{061c}', '\u{2028}', '—', '✓']),
        ];
        prop::collection::vec(char, 0..40).prop_map(String::from_iter)
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_the_default_writes_it(value in text(), n in any::<i64>()) {
            let (default, ours) = both(|| tracing::info!(value = value.as_str(), n, "m"));
            prop_assert_eq!(ours, default);
        }

        #[test]
        fn any_displayed_text_stays_on_its_line(value in text()) {
            let (default, ours) = both(|| tracing::info!(shown = %value, "m {value}"));
            prop_assert_eq!(ours.lines().count(), 1);
            prop_assert!(!ours.trim_end_matches('\n').chars().any(crate::terminal::is_unsafe));
            if !value.chars().any(crate::terminal::is_unsafe) {
                prop_assert_eq!(ours, default);
            }
        }
    }
}
