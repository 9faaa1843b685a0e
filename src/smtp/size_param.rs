//! The `SIZE=` parameter of MAIL FROM (RFC 1870), read from the raw line. smtp-proto
//! saturates a value past `usize::MAX` and then starts again from the next digit, so
//! `SIZE=99999999999999999999999` comes out as 999; Postfix instead refuses any value that
//! does not fit its `off_t`.

use super::path::span;

/// What the client declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredSize {
    Absent,
    Bytes(u64),
    /// Not a number: `501 5.5.4 Bad message size syntax`.
    Malformed,
    /// Larger than `i64::MAX` (Postfix's `off_t`):
    /// `552 5.3.4 Message size exceeds file system imposed limit`.
    Overflow,
}

impl DeclaredSize {
    /// The reply that refuses this size under `limit`, as Postfix words it.
    pub fn refusal(self, limit: usize) -> Option<&'static str> {
        match self {
            DeclaredSize::Absent => None,
            DeclaredSize::Bytes(n) if n <= limit as u64 => None,
            DeclaredSize::Bytes(_) => Some("552 5.3.4 Message size exceeds fixed limit"),
            DeclaredSize::Malformed => Some("501 5.5.4 Bad message size syntax"),
            DeclaredSize::Overflow => {
                Some("552 5.3.4 Message size exceeds file system imposed limit")
            }
        }
    }
}

/// The last `SIZE=` parameter after the reverse-path of a MAIL FROM line.
pub fn declared_size(line: &[u8]) -> DeclaredSize {
    // After the path, so that a local part like `"a> SIZE=1"` is not taken for a parameter.
    let params = span(line).map_or(&[][..], |(_, close)| &line[close + 1..]);
    let Some(value) = params
        .split(|b| b.is_ascii_whitespace())
        .filter(|word| word.len() >= 5 && word[..5].eq_ignore_ascii_case(b"SIZE="))
        .map(|word| &word[5..])
        .next_back()
    else {
        return DeclaredSize::Absent;
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return DeclaredSize::Malformed;
    }
    // Every byte is a digit, so the text is ASCII and parsing fails only on overflow.
    match std::str::from_utf8(value).map(str::parse::<u64>) {
        Ok(Ok(n)) if n <= i64::MAX as u64 => DeclaredSize::Bytes(n),
        _ => DeclaredSize::Overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_parameter() {
        let cases: &[(&str, DeclaredSize)] = &[
            ("MAIL FROM:<a@b.example>\r\n", DeclaredSize::Absent),
            (
                "MAIL FROM:<a@b.example> SIZE=1000\r\n",
                DeclaredSize::Bytes(1000),
            ),
            (
                "mail from:<> size=0 BODY=8BITMIME\r\n",
                DeclaredSize::Bytes(0),
            ),
            (
                "MAIL FROM:<a@b.example> BODY=7BIT SiZe=42\n",
                DeclaredSize::Bytes(42),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=0000000000000000000000000007\r\n",
                DeclaredSize::Bytes(7),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=9223372036854775807\r\n",
                DeclaredSize::Bytes(i64::MAX as u64),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=9223372036854775808\r\n",
                DeclaredSize::Overflow,
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=18446744073709551616\r\n",
                DeclaredSize::Overflow,
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n",
                DeclaredSize::Overflow,
            ),
            ("MAIL FROM:<a@b.example> SIZE=\r\n", DeclaredSize::Malformed),
            (
                "MAIL FROM:<a@b.example> SIZE=-1\r\n",
                DeclaredSize::Malformed,
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=+1\r\n",
                DeclaredSize::Malformed,
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=1k\r\n",
                DeclaredSize::Malformed,
            ),
            (
                "MAIL FROM:<\"a> SIZE=1\"@b.example> SIZE=99999999999999999999\r\n",
                DeclaredSize::Overflow,
            ),
            (
                "MAIL FROM:<\"a> SIZE=1\"@b.example>\r\n",
                DeclaredSize::Absent,
            ),
            ("MAIL FROM:a@b.example SIZE=1\r\n", DeclaredSize::Absent),
        ];
        for (line, expected) in cases {
            assert_eq!(declared_size(line.as_bytes()), *expected, "{line:?}");
        }
    }

    #[test]
    fn refusals_in_postfix_words() {
        assert_eq!(DeclaredSize::Absent.refusal(10), None);
        assert_eq!(DeclaredSize::Bytes(10).refusal(10), None);
        assert_eq!(
            DeclaredSize::Bytes(11).refusal(10),
            Some("552 5.3.4 Message size exceeds fixed limit")
        );
        assert_eq!(
            DeclaredSize::Overflow.refusal(usize::MAX),
            Some("552 5.3.4 Message size exceeds file system imposed limit")
        );
        assert_eq!(
            DeclaredSize::Malformed.refusal(10),
            Some("501 5.5.4 Bad message size syntax")
        );
    }
}
