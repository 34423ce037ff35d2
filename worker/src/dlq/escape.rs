//! Making stored text safe to print on an operator's terminal.
//!
//! Parked bodies and headers come from outside (a webhook body, any publisher's headers), and
//! `worker dlq`'s and `worker order`'s text output goes straight to a terminal. Text output
//! shows each character [`is_unsafe`] names (terminal controls, line breaks, bidi overrides)
//! as a visible `\u{…}` escape instead. `--json` output is left alone: serde escapes control
//! characters, and it must stay exact.

use std::borrow::Cow;

pub use shared::terminal::is_unsafe;

/// One line of output (a table cell, a header value): every unsafe character escaped,
/// newlines and tabs included.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// A block of output (a body): newlines and tabs kept, every other unsafe character escaped.
pub fn block(s: &str) -> Cow<'_, str> {
    escape(s, |c| matches!(c, '\n' | '\t'))
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_leaves_text_alone() {
        assert!(matches!(line("order_paid ünïcode 支付"), Cow::Borrowed(_)));
        assert_eq!(line("\u{1b}[31mred\u{7}"), "\\u{1b}[31mred\\u{7}");
        assert_eq!(line("a\rb\nc\td"), "a\\u{d}b\\u{a}c\\u{9}d");
        assert_eq!(line("\u{9b}2J"), "\\u{9b}2J", "C1 CSI");
        assert_eq!(line("x\u{2028}y\u{2029}"), "x\\u{2028}y\\u{2029}");
        assert_eq!(
            line("\u{202e}gnp.exe\u{2066}\u{2069}"),
            "\\u{202e}gnp.exe\\u{2066}\\u{2069}"
        );
        assert_eq!(
            block("a\nb\tc\r\u{1b}]0;title\u{7}"),
            "a\nb\tc\\u{d}\\u{1b}]0;title\\u{7}"
        );
    }

    #[test]
    fn nothing_unsafe_survives() {
        let all: String = (0..=0x10ffff_u32).filter_map(char::from_u32).collect();
        assert!(!line(&all).chars().any(is_unsafe));
        assert!(
            !block(&all)
                .chars()
                .any(|c| is_unsafe(c) && c != '\n' && c != '\t')
        );
    }
}
