//! Property tests of `worker dlq`'s terminal escaper: whatever a parked message holds, its
//! text output carries no raw control or bidi character, and safe text is left unchanged.

use proptest::prelude::*;
use worker::dlq::escape::{block, is_unsafe, line};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn escaped_lines_hold_no_unsafe_character(s in any::<String>()) {
        prop_assert!(!line(&s).chars().any(is_unsafe));
        prop_assert!(!block(&s).chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t'));
    }

    #[test]
    fn safe_text_is_unchanged(s in any::<String>()) {
        let safe: String = s.chars().filter(|c| !is_unsafe(*c)).collect();
        prop_assert_eq!(line(&safe), safe.as_str());
    }

    #[test]
    fn escaping_is_reversible_enough_to_read(s in "[\\x00-\\x1f\\x7f-\\x9fa-z\\u{2028}\\u{202e}]{0,16}") {
        // Every unsafe character becomes exactly one `\u{hex}` escape.
        let escaped = line(&s).into_owned();
        let count = s.chars().filter(|c| is_unsafe(*c)).count();
        prop_assert_eq!(escaped.matches("\\u{").count(), count);
    }
}
