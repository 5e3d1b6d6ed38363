//! Text from senders made safe for a terminal: span and service names are the sender's bytes,
//! and an escape sequence in one could rewrite the operator's screen. Control characters are
//! shown escaped (`\u{1b}`), everything else as it is.

use std::borrow::Cow;

/// `s` with its control characters escaped; borrowed when it has none.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("GET /cpu — ok"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
    }
}
