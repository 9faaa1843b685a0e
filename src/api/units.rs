//! Units in the MailServer spec: sizes written as Kubernetes quantities. Shared by the
//! spec's accessors and by validation, so neither imports the other.

const FORMS: &str = "expected a Kubernetes quantity: a number, optionally with a \
                     fraction, and a suffix Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024), \
                     k, M, G, T, P, E (powers of 1000), m (thousandths) or an exponent \
                     e3, e.g. 25Mi or 1.5Gi";

/// Parses a size in bytes written as a Kubernetes quantity ("25Mi", "1.5Gi", "10M",
/// "1e6", "1048576"), with the API server's grammar and its rounding: a fraction of a
/// byte rounds up, as `Quantity.Value()` does.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    if unsigned.starts_with('-') {
        return Err(format!("{s:?} is negative"));
    }
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(format!("{s:?} is not a size: {FORMS}"));
    }
    let (binary, decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => match suffix.strip_prefix(['e', 'E']).map(str::parse::<i32>) {
            Some(Ok(exponent)) => (0, exponent),
            _ => return Err(format!("{s:?} has an unknown suffix {suffix:?}: {FORMS}")),
        },
    };
    let too_large = || format!("{s:?} is too large");
    // The digits as one integer, scaled by 10^(decimal - fraction digits) and 2^binary.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err(too_large());
    }
    let mut value: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| too_large())?
    };
    value = value
        .checked_shl(binary)
        .filter(|v| v >> binary == value)
        .ok_or_else(too_large)?;
    let exponent = decimal - i32::try_from(fraction.len()).map_err(|_| too_large())?;
    if exponent >= 0 {
        let scale = 10u128
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(too_large)?;
        value = value.checked_mul(scale).ok_or_else(too_large)?;
    } else {
        let scale = 10u128.checked_pow(exponent.unsigned_abs());
        value = scale.map_or(u128::from(value != 0), |scale| value.div_ceil(scale));
    }
    u64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        for (quantity, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("+1048576", 1 << 20),
            ("25Mi", 25 << 20),
            ("10M", 10_000_000),
            ("2k", 2000),
            ("3Ki", 3072),
            ("1G", 1_000_000_000),
            ("1Gi", 1 << 30),
            ("2Ti", 2 << 40),
            ("1Pi", 1 << 50),
            ("1Ei", 1 << 60),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
            (".5Ki", 512),
            ("1.Ki", 1024),
            ("1.5", 2),
            ("1500m", 2),
            ("1000m", 1),
            ("1m", 1),
            ("1e6", 1_000_000),
            ("1E3", 1000),
            ("2.5e-1", 1),
            ("12e-2", 1),
            ("1e-40", 1),
            ("0.0", 0),
            ("007Mi", 7 << 20),
        ] {
            assert_eq!(parse_size(quantity), Ok(bytes), "{quantity}");
        }
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        for bad in [
            "", "Mi", ".", "25MB", "25 Mi", " 25Mi", "25mi", "2K", "1.2.3", "1e", "1e1.5", "0x10",
            "Mi25",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("e.g. 25Mi or 1.5Gi"), "{bad:?}: {err}");
        }
        assert!(parse_size("-1").unwrap_err().contains("negative"));
        for huge in [
            "99999999999Ti",
            "99999999999999999999",
            "16Ei",
            "2e19",
            "1e400",
        ] {
            assert!(
                parse_size(huge).unwrap_err().contains("too large"),
                "{huge}"
            );
        }
    }
}
