//! Message content in canonical form: lines ended by CRLF, and no CR or LF anywhere else
//! (RFC 5321 §2.3.8). What the spool keeps and what goes to a next hop is in this form,
//! so that no other server can be made to see an end of data we did not mean (outbound
//! SMTP smuggling). A bare LF ends a line; a CR not followed by LF becomes a space, as
//! Postfix's `cleanup_replace_stray_cr_lf` does; a last line without a line end gets
//! one.

/// The canonical form of `content`, or `None` when it already is.
pub fn canonical(content: &[u8]) -> Option<Vec<u8>> {
    if is_canonical(content) {
        return None;
    }
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 2);
    for line in content.split_inclusive(|&b| b == b'\n') {
        let text = match line.strip_suffix(b"\n") {
            Some(text) => text.strip_suffix(b"\r").unwrap_or(text),
            None => line,
        };
        out.extend(text.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

fn is_canonical(content: &[u8]) -> bool {
    if !(content.is_empty() || content.ends_with(b"\r\n")) {
        return false;
    }
    let mut rest = content;
    while let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        if rest.get(at..at + 2) != Some(b"\r\n") {
            return false;
        }
        rest = &rest[at + 2..];
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bare_lf_becomes_crlf_and_stray_cr_a_space() {
        assert_eq!(
            canonical(b"a\nb\r\nc\rd\r\r\n\n.\n").unwrap(),
            b"a\r\nb\r\nc d \r\n\r\n.\r\n"
        );
        assert_eq!(canonical(b"no end").unwrap(), b"no end\r\n");
        assert_eq!(canonical(b"ends in cr\r").unwrap(), b"ends in cr \r\n");
    }

    #[test]
    fn canonical_content_is_left_alone() {
        for content in [&b""[..], b"\r\n", b"a\r\n.\r\n\r\nb\r\n"] {
            assert_eq!(canonical(content), None, "{content:?}");
        }
    }

    proptest! {
        #[test]
        fn output_is_canonical_and_stable(
            content in prop::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'.', b'a']), 0..64),
        ) {
            let fixed = canonical(&content).unwrap_or_else(|| content.clone());
            prop_assert!(is_canonical(&fixed));
            prop_assert_eq!(canonical(&fixed), None);
            // Only line ends and stray CRs change: the other bytes stay, in order, and
            // every line keeps its line end (a last one gains one).
            let kept = |c: &[u8]| -> Vec<u8> {
                c.iter().copied().filter(|b| !matches!(b, b'\r' | b'\n' | b' ')).collect()
            };
            prop_assert_eq!(kept(&fixed), kept(&content));
            let lfs = |c: &[u8]| c.iter().filter(|&&b| b == b'\n').count();
            let unended = usize::from(!content.is_empty() && !content.ends_with(b"\n"));
            prop_assert_eq!(lfs(&fixed), lfs(&content) + unended);
        }
    }
}
