//! A client's network, for limits that one host must not escape by changing address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `ip` with all but its first `v4_bits` (IPv4) or `v6_bits` (IPv6) bits cleared; an
/// IPv4-mapped IPv6 address counts as IPv4.
pub fn network(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask(v4_bits, 32) as u32)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask(v6_bits, 128))),
    }
}

/// The top `bits` of a `width`-bit number set.
fn mask(bits: u32, width: u32) -> u128 {
    let ones = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    ones >> (128 - width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ip: &str, v4: u32, v6: u32) -> String {
        network(ip.parse().unwrap(), v4, v6).to_string()
    }

    #[test]
    fn keeps_the_leading_bits() {
        assert_eq!(net("192.0.2.77", 24, 64), "192.0.2.0");
        assert_eq!(net("192.0.2.77", 32, 64), "192.0.2.77");
        assert_eq!(net("::ffff:192.0.2.77", 24, 64), "192.0.2.0");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 24, 64), "2001:db8:1:2::");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 32, 128), "2001:db8:1:2:3:4:5:6");
        assert_eq!(net("2001:db8::1", 32, 0), "::");
    }
}
