//! `DomainChecker::check` (`reject_unknown_recipient_domain`) against a name server
//! played in-process, which answers each record type of a name as the test says: MX
//! first, then A/AAAA, and which DNS failures are final.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

use super::recipient::{DomainChecker, DomainStatus};

/// How the name server answers one record type of one name.
#[derive(Clone, Copy)]
enum Reply {
    /// One record of the asked type.
    Record,
    /// That record in the additional section only, with no answer.
    Aside,
    /// NOERROR without records.
    NoData,
    NxDomain,
    ServFail,
}

/// Answers over UDP from `replies` (name without the final dot, record type); anything
/// else is NXDOMAIN.
async fn name_server(replies: HashMap<(&'static str, RecordType), Reply>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let replies = Arc::new(replies);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..len]).unwrap();
            let reply = answer(&query, &replies).to_vec().unwrap();
            socket.send_to(&reply, peer).await.unwrap();
        }
    });
    addr
}

fn answer(query: &Message, replies: &HashMap<(&'static str, RecordType), Reply>) -> Message {
    let question = query.queries.first().unwrap();
    let name = question.name().to_ascii();
    let key = (name.trim_end_matches('.'), question.query_type());
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let found = replies
        .iter()
        .find(|((n, t), _)| (*n, *t) == key)
        .map(|(_, reply)| *reply);
    let found = found.unwrap_or(Reply::NxDomain);
    match found {
        Reply::Record | Reply::Aside => {
            let rdata = match question.query_type() {
                RecordType::MX => RData::MX(MX::new(10, Name::from_ascii("mx.example.").unwrap())),
                RecordType::A => RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                RecordType::AAAA => {
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
                }
                other => panic!("no record of type {other} to give"),
            };
            let record = Record::from_rdata(question.name().clone(), 0, rdata);
            if matches!(found, Reply::Record) {
                reply.add_answer(record);
            } else {
                reply.add_additional(record);
            }
        }
        Reply::NoData => {}
        Reply::NxDomain => reply.metadata.response_code = ResponseCode::NXDomain,
        Reply::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
    }
    reply
}

/// Each case gives a name's MX reply and its address reply (A and AAAA alike).
#[tokio::test]
async fn mx_then_address_and_only_answers_are_final() {
    use RecordType::{A, MX};
    use Reply::{Aside, NoData, NxDomain, Record, ServFail};
    let cases = [
        // An MX record is enough; the A lookup would say no.
        ("mx-only.test", Record, NoData, DomainStatus::Exists),
        // No MX: an address record makes the domain exist, as in Postfix.
        ("a-only.test", NoData, Record, DomainStatus::Exists),
        ("no-records.test", NoData, NoData, DomainStatus::NotFound),
        // Only records in the answer count (the resolver passes on the rest).
        ("mx-aside.test", Aside, NoData, DomainStatus::NotFound),
        ("a-aside.test", NoData, Aside, DomainStatus::NotFound),
        // NXDOMAIN on the MX lookup is final: no address lookup can revive the name.
        ("gone.test", NxDomain, Record, DomainStatus::NotFound),
        // A failing MX lookup is a temporary failure, whatever the A lookup says.
        ("mx-servfail.test", ServFail, Record, DomainStatus::TempFail),
        ("a-servfail.test", NoData, ServFail, DomainStatus::TempFail),
    ];
    let mut replies = HashMap::new();
    for (name, mx, a, _) in cases {
        replies.insert((name, MX), mx);
        replies.insert((name, A), a);
        replies.insert((name, RecordType::AAAA), a);
    }
    let checker = DomainChecker::new(&[name_server(replies).await]).unwrap();
    for (name, _, _, expected) in cases {
        assert_eq!(checker.check(name).await, expected, "{name}");
    }
    // An address literal needs no lookup.
    assert_eq!(checker.check("[192.0.2.1]").await, DomainStatus::Exists);
}
