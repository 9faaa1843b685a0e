//! The DATA receiver: finds the end of the message and undoes dot-stuffing, fed in reads
//! of any size.
//!
//! It behaves as Postfix >= 3.9 with its defaults (`smtpd_forbid_bare_newline = normalize`
//! and `cleanup_replace_stray_cr_lf = yes`), which closes SMTP smuggling:
//! - the message ends only at `<CRLF>.<CRLF>`, the start of the message counting as a
//!   CRLF (so `.<CRLF>` as the first line is an empty message);
//! - a line may end in a bare LF, which is stored as CRLF, but such a line can never
//!   take part in the end of data: a lone `.` line that ends in a bare LF, or follows a
//!   line that did, is dropped and the message goes on (as Postfix's smtpd does);
//! - a leading `.` is removed from every other line (RFC 5321 §4.5.2);
//! - a CR that is not followed by LF is data, stored as a space (Postfix's cleanup), so
//!   no bare CR reaches the spool or a next hop.
//!
//! What is stored is therefore canonical: lines of anything but CR and LF, each ended by
//! CRLF.

/// Where the receiver is in the current line; the bytes it names are not written yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    LineStart,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
    InLine,
    /// After a CR inside a line.
    InLineCr,
}

/// Receives the content of one DATA command.
#[derive(Debug, Clone, Copy)]
pub struct DataReceiver {
    at: At,
    /// Whether the line before the current one ended in CRLF (true at the start).
    after_crlf: bool,
    bare_lf: bool,
}

/// Where received content goes.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Content that is only read to find its end (a message over the size limit).
pub struct Discard;

impl Sink for Discard {
    fn put(&mut self, _: &[u8]) {}
}

impl Default for DataReceiver {
    fn default() -> DataReceiver {
        DataReceiver::new()
    }
}

impl DataReceiver {
    pub fn new() -> DataReceiver {
        DataReceiver {
            at: At::LineStart,
            after_crlf: true,
            bare_lf: false,
        }
    }

    /// Whether some line ended in a bare LF.
    pub fn saw_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// Writes the content in `input` to `out`. At the end of data, answers how many bytes
    /// of `input` it took (the final `.<CRLF>` included); the rest is for the command
    /// reader.
    pub fn ingest(&mut self, input: &[u8], out: &mut impl Sink) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::InLine {
                // Fast path: copy up to the next CR or LF at once.
                let rest = &input[i..];
                let run = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                out.put(&rest[..run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let byte = input[i];
            i += 1;
            match (self.at, byte) {
                (At::LineStart, b'.') => self.at = At::Dot,
                (At::Dot, b'\r') => self.at = At::DotCr,
                (At::DotCr, b'\n') if self.after_crlf => {
                    self.at = At::LineStart;
                    return Some(i);
                }
                // A lone dot next to a bare LF: neither the end nor content.
                (At::Dot, b'\n') => self.end_line(false),
                (At::DotCr, b'\n') => self.end_line(true),
                // A CR, then a CR: the first one is stray.
                (At::DotCr | At::InLineCr, b'\r') => {
                    out.put(b" ");
                    self.at = At::InLineCr;
                }
                (At::LineStart | At::InLine, b'\r') => self.at = At::InLineCr,
                (At::InLineCr, b'\n') => {
                    out.put(b"\r\n");
                    self.end_line(true);
                }
                (At::LineStart | At::InLine, b'\n') => {
                    out.put(b"\r\n");
                    self.end_line(false);
                }
                // The dot of a stuffed line is dropped (`..` stays one dot).
                (At::Dot | At::LineStart | At::InLine, other) => {
                    out.put(&[other]);
                    self.at = At::InLine;
                }
                (At::DotCr | At::InLineCr, other) => {
                    out.put(&[b' ', other]);
                    self.at = At::InLine;
                }
            }
        }
        None
    }

    /// A line ends, in CRLF or in a bare LF.
    fn end_line(&mut self, crlf: bool) {
        self.bare_lf |= !crlf;
        self.after_crlf = crlf;
        self.at = At::LineStart;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 5321 §4.1.1.4 with Postfix's bare-LF rules, written as plainly as possible:
    /// the end is the first `<CRLF>.<CRLF>` (the start counting as CRLF); before it, every
    /// LF ends a line. Answers the stored content, the bytes taken and the bare-LF verdict,
    /// or `None` when the input does not end the message.
    fn model(input: &[u8]) -> Option<(Vec<u8>, usize, bool)> {
        let mut framed = b"\r\n".to_vec();
        framed.extend_from_slice(input);
        let at = framed.windows(5).position(|w| w == b"\r\n.\r\n")?;
        // framed[at..at + 2] is the CRLF ending the last line: content is input[..at].
        let content = &input[..at];
        let mut stored = Vec::new();
        let mut bare_lf = false;
        for line in content.split_inclusive(|&b| b == b'\n') {
            let (text, crlf) = match line.strip_suffix(b"\r\n") {
                Some(text) => (text, true),
                None => (&line[..line.len() - 1], false),
            };
            bare_lf |= !crlf;
            if text == b"." {
                continue;
            }
            let text = text.strip_prefix(b".").unwrap_or(text);
            stored.extend(text.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
            stored.extend_from_slice(b"\r\n");
        }
        Some((stored, at + 3, bare_lf))
    }

    /// Feeds `input` in the given chunk sizes (cycled); answers what was stored, the
    /// bytes taken when the end was found, and the bare-LF verdict.
    fn receive(input: &[u8], chunks: &[usize]) -> (Vec<u8>, Option<usize>, bool) {
        let mut receiver = DataReceiver::new();
        let mut stored = Vec::new();
        let mut offset = 0;
        for &size in chunks.iter().cycle() {
            if offset >= input.len() {
                break;
            }
            let end = offset.saturating_add(size).min(input.len());
            if let Some(taken) = receiver.ingest(&input[offset..end], &mut stored) {
                return (stored, Some(offset + taken), receiver.saw_bare_lf());
            }
            offset = end;
        }
        (stored, None, receiver.saw_bare_lf())
    }

    fn token() -> impl Strategy<Value = &'static [u8]> {
        prop::sample::select(vec![
            &b"\r"[..],
            b"\n",
            b".",
            b"..",
            b"\r\n",
            b"\r\n.\r\n",
            b"\n.\n",
            b"\r.\r",
            b"\r\n.",
            b"\0",
            b" ",
            b"text",
            b"MAIL FROM:<a@b>",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn matches_the_reference_model(
            tokens in prop::collection::vec(token(), 0..40),
            chunks in prop::collection::vec(1usize..12, 1..8),
        ) {
            let input = tokens.concat();
            let (stored, taken, bare_lf) = receive(&input, &chunks);
            match model(&input) {
                Some((want, want_taken, want_bare_lf)) => {
                    prop_assert_eq!(taken, Some(want_taken));
                    prop_assert_eq!(stored, want);
                    prop_assert_eq!(bare_lf, want_bare_lf);
                }
                None => prop_assert_eq!(taken, None),
            }
        }

        /// Whatever arrives, what is stored has CR and LF only as CRLF.
        #[test]
        fn stores_only_crlf_line_ends(
            input in prop::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'.', b'a']), 0..64),
        ) {
            let (stored, _, _) = receive(&input, &[usize::MAX]);
            let mut rest = &stored[..];
            while let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                prop_assert_eq!(&rest[at..at + 2], b"\r\n");
                rest = &rest[at + 2..];
            }
        }
    }

    /// The published smuggling sequences (SEC Consult, 2023, and variants): none ends the
    /// message; the commands after them stay content, and the real end comes later.
    #[test]
    fn smuggling_sequences_do_not_end_the_message() {
        for (name, sequence) in [
            ("lf-dot-lf", &b"\n.\n"[..]),
            ("lf-dot-crlf", b"\n.\r\n"),
            ("cr-dot-cr", b"\r.\r"),
            ("cr-dot-crlf", b"\r.\r\n"),
            ("crlf-dot-cr", b"\r\n.\r"),
            ("crlf-dot-lf", b"\r\n.\n"),
            ("lf-dot-cr", b"\n.\r"),
            ("cr-dot-lf", b"\r.\n"),
            ("crlf-nul-dot-crlf", b"\r\n\x00.\r\n"),
            ("crlf-dot-cr-crlf", b"\r\n.\r\r\n"),
            ("crlf-dot-cr-cr-crlf", b"\r\n.\r\r\r\n"),
            ("crlf-dot-space-crlf", b"\r\n. \r\n"),
            ("crlf-dot-nul-crlf", b"\r\n.\x00\r\n"),
        ] {
            let smuggled = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nevil\r\n";
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(sequence);
            input.extend_from_slice(smuggled);
            for chunk in [1, 2, 3, 7, usize::MAX] {
                let (stored, taken, _) = receive(&input, &[chunk]);
                assert_eq!(taken, None, "{name} ended the message (chunks of {chunk})");
                assert!(
                    stored.windows(smuggled.len()).any(|w| w == smuggled),
                    "{name}: the commands are not content: {:?}",
                    String::from_utf8_lossy(&stored)
                );
            }
            input.extend_from_slice(b".\r\nQUIT\r\n");
            let (_, taken, _) = receive(&input, &[usize::MAX]);
            assert_eq!(taken, Some(input.len() - 6), "{name}: the real end");
        }
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_leaves_the_rest() {
        let mut r = DataReceiver::new();
        let mut out = Vec::new();
        assert_eq!(r.ingest(b"a\r\n.\r\nQUIT\r\n", &mut out), Some(6));
        assert_eq!(out, b"a\r\n");
        assert!(!r.saw_bare_lf());
    }

    #[test]
    fn a_dot_line_first_is_an_empty_message() {
        let mut out = Vec::new();
        assert_eq!(
            DataReceiver::new().ingest(b".\r\nNOOP\r\n", &mut out),
            Some(3)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn unstuffs_leading_dots() {
        let mut out = Vec::new();
        let input = b"..\r\n.a\r\n...b\r\na.\r\n\n..c\n.\r\n.\r\n";
        assert_eq!(
            DataReceiver::new().ingest(input, &mut out),
            Some(input.len())
        );
        assert_eq!(out, b".\r\na\r\n..b\r\na.\r\n\r\n.c\r\n");
    }

    #[test]
    fn bare_lf_ends_a_line_and_is_stored_as_crlf() {
        let mut r = DataReceiver::new();
        let mut out = Vec::new();
        assert_eq!(r.ingest(b"a\nb\r\n\r\n.\r\n", &mut out), Some(10));
        assert_eq!(out, b"a\r\nb\r\n\r\n");
        assert!(r.saw_bare_lf());
    }

    #[test]
    fn stray_cr_is_stored_as_a_space() {
        let mut out = Vec::new();
        let input = b"a\rb\r\r\n\r.\r\n.\r\n";
        assert_eq!(
            DataReceiver::new().ingest(input, &mut out),
            Some(input.len())
        );
        assert_eq!(out, b"a b \r\n .\r\n");
    }

    #[test]
    fn discarding_still_finds_the_end() {
        let mut r = DataReceiver::new();
        assert_eq!(r.ingest(b"x\n.\r\n", &mut Discard), None);
        assert_eq!(r.ingest(b"\r\n.\r\nRSET\r\n", &mut Discard), Some(5));
    }
}
