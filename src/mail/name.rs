//! Syntax checks for the names a config or a manifest carries: DNS names, domains,
//! mail addresses, `host:port`. `api` and `config` report their violations with their
//! own field paths.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Address;

/// Splits `host:port` (IPv6 addresses in brackets: `[2001:db8::1]:587`), checking the
/// host is a DNS name or IP address and the port is in 1..=65535. The host comes back
/// without brackets, ready for `(host, port).to_socket_addrs()` or a resolver.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} has no port: expected host:port, e.g. smtp.example.com:587"
        ));
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host: expected host:port"));
    }
    let host = if let Some(inner) = host.strip_prefix('[') {
        match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => v6,
            _ => return Err(format!("{s:?}: {host} is not a bracketed IPv6 address")),
        }
    } else if host.contains(':') {
        return Err(format!(
            "{s:?}: write an IPv6 address in brackets, e.g. [2001:db8::1]:587"
        ));
    } else {
        if host.parse::<Ipv4Addr>().is_err() {
            check_dns_name(host).map_err(|e| format!("{s:?}: host {e}"))?;
        }
        host
    };
    let port = match port.parse::<u32>() {
        Ok(p @ 1..=65535) => p as u16,
        Ok(p) => return Err(format!("{s:?}: port {p} is out of range 1-65535")),
        Err(_) => return Err(format!("{s:?}: port {port:?} is not a number")),
    };
    Ok((host, port))
}

/// A DNS name of one or more labels (letters, digits, '-'), without a trailing dot.
pub fn check_dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    if s.ends_with('.') {
        return Err(format!("{s:?} must not end with a dot"));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(format!(
                "{s:?} has an empty label (a leading dot or two dots)"
            ));
        }
        if label.len() > 63 {
            return Err(format!("{s:?} has a label longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "{s:?} contains {c:?}: only letters, digits, '-' and '.' are allowed \
                 (write international names in their xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{s:?} has a label starting or ending with '-'"));
        }
    }
    Ok(())
}

/// A fully qualified domain name: at least two labels, the last one not numeric.
pub fn check_fqdn(s: &str) -> Result<(), String> {
    check_dns_name(s)?;
    let last = s.rsplit('.').next().unwrap_or(s);
    if !s.contains('.') {
        return Err(format!(
            "{s:?} is not fully qualified: expected a name like mail.example.com"
        ));
    }
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a domain name (an IP address or a numeric top-level label)"
        ));
    }
    Ok(())
}

/// A mail address as used in logins and the sender login map: `local@domain`, the
/// domain fully qualified, the local part free of spaces and of the characters that
/// delimit addresses and map entries.
pub fn check_address(s: &str) -> Result<(), String> {
    let Some(address) = Address::parse(s) else {
        return Err(format!(
            "{s:?} is not a mail address: expected local-part@domain, e.g. alice@example.com"
        ));
    };
    let (local, domain) = (address.local(), address.domain());
    if local.is_empty() {
        return Err(format!("{s:?} has an empty local part (before the @)"));
    }
    if local.len() > 64 {
        return Err(format!("{s:?} has a local part longer than 64 characters"));
    }
    if let Some(c) = local
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"(),:;<>@[\\]".contains(*c))
    {
        return Err(format!("{s:?} contains {c:?}, which is not allowed here"));
    }
    check_fqdn(domain).map_err(|e| format!("{s:?} has a bad domain: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(
            split_host_port("smtp.provider.example:587"),
            Ok(("smtp.provider.example", 587))
        );
        assert_eq!(split_host_port("relay:25"), Ok(("relay", 25)));
        assert_eq!(split_host_port("192.0.2.1:465"), Ok(("192.0.2.1", 465)));
        assert_eq!(split_host_port("[2001:db8::1]:24"), Ok(("2001:db8::1", 24)));
        let cases = [
            ("smtp.provider.example", "has no port"),
            (":587", "has no host"),
            ("relay:0", "out of range"),
            ("relay:65536", "out of range"),
            ("relay:smtp", "not a number"),
            ("2001:db8::1:25", "in brackets"),
            ("[2001:db8::zz]:25", "bracketed IPv6"),
            ("[2001:db8::1:25", "bracketed IPv6"),
            ("bad_host:25", "contains '_'"),
        ];
        for (input, expected) in cases {
            let err = split_host_port(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }
}
