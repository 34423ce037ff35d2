//! Which characters must not reach an operator's terminal or a log line as they are.
//!
//! Text from outside (a webhook body, a URL path, any publisher's headers, a game's error
//! body) ends up in `worker dlq`'s and `worker order`'s text output and in the text log. An
//! ESC or CSI sequence there can recolour, move the cursor, retitle the window or hide lines
//! (terminal injection); a newline, a CR or a line separator can forge a line; bidi
//! overrides can make text read differently from what it is. Each printer shows such a
//! character as a visible escape instead.

/// Whether `c` must not be printed raw: C0 controls, DEL, C1 controls (CSI is U+009B),
/// line and paragraph separators, and the bidirectional marks, embeddings, overrides and
/// isolates.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{2028}' | '\u{2029}'
        | '\u{200e}' | '\u{200f}' | '\u{061c}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Whether a piece of UTF-8 text may hold an [`is_unsafe`] character: a byte below 0x20 or
/// DEL, or a lead byte of one (0xC2 leads U+0080..U+00BF, 0xD8 U+0600..U+063F, 0xE2
/// U+2000..U+2FFF). One pass over the bytes; `false` means none is there.
pub fn may_hold_unsafe(text: &str) -> bool {
    text.bytes()
        .any(|b| b < 0x20 || matches!(b, 0x7f | 0xc2 | 0xd8 | 0xe2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_check_never_misses_an_unsafe_character() {
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            if is_unsafe(c) {
                assert!(may_hold_unsafe(c.encode_utf8(&mut [0; 4])), "{c:?}");
            }
        }
        assert!(!may_hold_unsafe("order_paid ünïcode 支付 plain"));
    }
}
