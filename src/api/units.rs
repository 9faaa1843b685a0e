//! Units in the MailServer spec: sizes written as Kubernetes quantities. Shared by the
//! spec's accessors and by validation, so neither imports the other.

/// Parses a size: a whole number of bytes, optionally with a suffix k/K, M, G, T (powers
/// of 1000) or Ki, Mi, Gi, Ti (powers of 1024), as in Kubernetes quantities: "25Mi",
/// "10M", "1048576".
pub fn parse_size(s: &str) -> Result<u64, String> {
    const FORMS: &str = "expected a whole number of bytes, optionally with a suffix \
                         k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024), \
                         e.g. 25Mi";
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!("{s:?} is not a size: {FORMS}"));
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(format!("{s:?} has an unknown suffix {suffix:?}: {FORMS}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("25Mi"), Ok(25 << 20));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("2K"), Ok(2000));
        assert_eq!(parse_size("3Ki"), Ok(3072));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("2Ti"), Ok(2 << 40));
        for bad in [
            "", "Mi", "25MB", "25 Mi", " 25Mi", "1.5Mi", "-1", "25mi", "1e6",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("e.g. 25Mi"), "{bad:?}: {err}");
        }
        assert!(
            parse_size("99999999999Ti")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }
}
