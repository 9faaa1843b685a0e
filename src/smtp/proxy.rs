//! PROXY protocol v1 and v2 (HAProxy's spec): the real client of a connection relayed by
//! a trusted load balancer. The header is read before anything else on the connection
//! (before the TLS handshake on 465) and never past its end, so what follows it is
//! untouched for the session.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Postfix's `smtpd_upstream_proxy_timeout`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Every v1 and v2 header is at least this long, so it is read at once.
const SHORTEST: usize = 12;
/// RFC-like limit of the text form, CRLF included.
const V1_MAX: usize = 107;
/// v2: signature, version/command, family/protocol, then a 16-bit length.
const V2_FIXED: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no PROXY header within {HEADER_TIMEOUT:?}")]
    Timeout,
    #[error("connection lost before the PROXY header ended: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection from a trusted proxy does not start with a PROXY header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// The address a session is for: `peer` itself unless it is a trusted proxy, then the
/// client its header names (IPv4-mapped addresses as IPv4). An error means the
/// connection must be refused.
pub async fn client_address<R: AsyncRead + Unpin>(
    trusted: &[IpNet],
    io: &mut R,
    peer: SocketAddr,
) -> Result<SocketAddr, Error> {
    if !trusted
        .iter()
        .any(|net| net.contains(&peer.ip().to_canonical()))
    {
        return Ok(peer);
    }
    let claimed = tokio::time::timeout(HEADER_TIMEOUT, read_header(io))
        .await
        .map_err(|_| Error::Timeout)??;
    Ok(claimed
        .map(|client| SocketAddr::new(client.ip().to_canonical(), client.port()))
        .unwrap_or(peer))
}

/// The source address in the header; `None` for v1 UNKNOWN, v2 LOCAL and v2 headers
/// without an internet address, where the spec says to use the connection's own.
pub async fn read_header<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, Error> {
    let mut header = vec![0u8; SHORTEST];
    io.read_exact(&mut header).await?;
    if header == ppp::v2::PROTOCOL_PREFIX {
        header.resize(V2_FIXED, 0);
        io.read_exact(&mut header[SHORTEST..]).await?;
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(V2_FIXED + length, 0);
        io.read_exact(&mut header[V2_FIXED..]).await?;
        parse_v2(&header)
    } else if header.starts_with(b"PROXY ") {
        // Byte by byte: the line has no length prefix and must not be over-read.
        while header.last() != Some(&b'\n') {
            if header.len() == V1_MAX {
                return Err(Error::Malformed("v1 line longer than 107 bytes".into()));
            }
            header.push(io.read_u8().await?);
        }
        parse_v1(&header)
    } else {
        Err(Error::Missing)
    }
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, Error> {
    use ppp::v1::{Addresses, Header};
    // The line is US-ASCII by the spec; ppp slices it by byte offsets and panics inside
    // a multi-byte character (found by fuzz/fuzz_targets/proxy_header.rs).
    if !line.is_ascii() {
        return Err(Error::Malformed("not ASCII".into()));
    }
    let text = std::str::from_utf8(line).map_err(|_| Error::Malformed("not ASCII".into()))?;
    let header = Header::try_from(text).map_err(|e| Error::Malformed(e.to_string()))?;
    // The parser stops at the first CR; anything between it and the LF is not CRLF.
    if header.header.len() != text.len() {
        return Err(Error::Malformed("v1 line does not end in CRLF".into()));
    }
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        Addresses::Unknown => None,
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Option<SocketAddr>, Error> {
    use ppp::v2::{Addresses, Command, Header, Protocol};
    let header = Header::try_from(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    if header.protocol == Protocol::Datagram {
        return Err(Error::Malformed(
            "v2 header for a datagram connection".into(),
        ));
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "10.1.2.3:40000";

    fn trusted() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]
    }

    /// Runs `client_address` on `input` from `peer`; returns its answer and the bytes it
    /// left unread.
    fn run(peer: &str, input: &[u8]) -> (Result<SocketAddr, Error>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut rest = input;
        let result = rt.block_on(client_address(&trusted(), &mut rest, peer.parse().unwrap()));
        (result, rest.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = ppp::v2::PROTOCOL_PREFIX.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        h.extend(len.to_be_bytes());
        h.extend(addresses);
        h.extend(tlvs);
        h
    }

    fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend([192, 0, 2, 1]);
        a.extend(port.to_be_bytes());
        a.extend(465u16.to_be_bytes());
        v2(1, 0x11, &a, &[])
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_source_and_leave_the_rest() {
        let (got, rest) = run(
            PEER,
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 25\r\nEHLO x\r\n",
        );
        assert_eq!(got.unwrap(), "203.0.113.7:51234".parse().unwrap());
        assert_eq!(rest, b"EHLO x\r\n");
        let (got, rest) = run(
            PEER,
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 25\r\n\x16\x03",
        );
        assert_eq!(got.unwrap(), "[2001:db8::7]:51234".parse().unwrap());
        assert_eq!(rest, b"\x16\x03");
    }

    #[test]
    fn v1_unknown_uses_the_peer() {
        let (got, rest) = run(PEER, b"PROXY UNKNOWN\r\nQUIT\r\n");
        assert_eq!(got.unwrap(), PEER.parse().unwrap());
        assert_eq!(rest, b"QUIT\r\n");
        let (got, _) = run(PEER, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(got.unwrap(), PEER.parse().unwrap());
    }

    #[test]
    fn v1_malformed_is_refused() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 51234\r\n"[..],
            b"PROXY TCP4 2001:db8::7 192.0.2.1 1 25\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 25\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 01 25\r\n",
            b"PROXY TCP5 203.0.113.7 192.0.2.1 1 25\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 1 25\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 1 25\rx\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 1 25 extra\r\n",
            b"PROXY TCP4 203.0.113.\xff 192.0.2.1 1 25\r\n",
            // Valid UTF-8 but not ASCII: ppp panicked on it (found by fuzzing).
            "PROXY TCP6 2001:db8::7 2001:db8:\rƘb P6 2001Ƙb\n".as_bytes(),
        ] {
            let (got, _) = run(PEER, bad);
            assert!(
                matches!(got, Err(Error::Malformed(_))),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_line_is_read_to_107_bytes_and_no_further() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'a');
        let (got, rest) = run(PEER, &long);
        assert!(matches!(got, Err(Error::Malformed(_))), "{got:?}");
        assert_eq!(rest.len(), 200 - V1_MAX);
    }

    #[test]
    fn v2_proxy_gives_the_source_and_skips_tlvs() {
        let mut input = v2_tcp4([203, 0, 113, 7], 51234);
        input.extend(b"EHLO x\r\n");
        let (got, rest) = run(PEER, &input);
        assert_eq!(got.unwrap(), "203.0.113.7:51234".parse().unwrap());
        assert_eq!(rest, b"EHLO x\r\n");

        let mut a = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        a.extend([0; 16]);
        a.extend([0, 1, 0, 2]);
        let mut input = v2(1, 0x21, &a, &[0x04, 0, 3, b'a', b'b', b'c']);
        input.push(0x16);
        let (got, rest) = run(PEER, &input);
        assert_eq!(got.unwrap(), "[2001:db8::7]:1".parse().unwrap());
        assert_eq!(rest, [0x16]);
    }

    #[test]
    fn v2_local_unspec_and_unix_use_the_peer() {
        for header in [
            v2(0, 0x00, &[], &[]),
            v2(0, 0x11, &[0; 12], &[]),
            v2(1, 0x00, &[], &[]),
            v2(1, 0x31, &[0; 216], &[]),
        ] {
            let (got, rest) = run(PEER, &header);
            assert_eq!(got.unwrap(), PEER.parse().unwrap());
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn v2_malformed_is_refused() {
        let mut bad_version = v2_tcp4([203, 0, 113, 7], 1);
        bad_version[12] = 0x11;
        let mut bad_command = v2_tcp4([203, 0, 113, 7], 1);
        bad_command[12] = 0x22;
        let too_short = v2(1, 0x11, &[0; 8], &[]);
        let datagram = v2(1, 0x12, &[0; 12], &[]);
        for bad in [bad_version, bad_command, too_short, datagram] {
            let (got, _) = run(PEER, &bad);
            assert!(matches!(got, Err(Error::Malformed(_))), "{bad:?}: {got:?}");
        }
    }

    #[test]
    fn trusted_peer_without_header_is_refused() {
        for input in [
            &b"EHLO client.example\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00",
        ] {
            let (got, _) = run(PEER, input);
            assert!(matches!(got, Err(Error::Missing)), "{got:?}");
        }
        // Closed early, or half a header.
        let (got, _) = run(PEER, b"PROXY TCP4 203.0.113.7");
        assert!(matches!(got, Err(Error::Io(_))), "{got:?}");
        let (got, _) = run(PEER, &v2_tcp4([203, 0, 113, 7], 1)[..20]);
        assert!(matches!(got, Err(Error::Io(_))), "{got:?}");
    }

    #[test]
    fn untrusted_peer_is_not_read() {
        let input = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 25\r\n";
        for peer in ["192.0.2.9:1000", "[2001:db9::1]:1000"] {
            let (got, rest) = run(peer, input);
            assert_eq!(got.unwrap(), peer.parse().unwrap());
            assert_eq!(rest, input);
        }
    }

    #[test]
    fn mapped_addresses_count_as_ipv4() {
        let (got, _) = run(
            "[::ffff:10.9.9.9]:1000",
            b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 1 25\r\n",
        );
        assert_eq!(got.unwrap(), "203.0.113.7:1".parse().unwrap());
        let (got, _) = run("[::ffff:10.9.9.9]:1000", b"EHLO client.example\r\n");
        assert!(matches!(got, Err(Error::Missing)), "{got:?}");
    }
}
