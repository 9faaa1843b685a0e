//! A tiny DNS server for what dnsmasq cannot do: answer SERVFAIL, or nothing at all, for
//! a chosen domain, and change its mind while a test runs. Every other name is NXDOMAIN.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How the server answers for a domain and the names under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `MX 10 mx.<domain>`, and A 127.0.0.1 for every name; TTL 0 so nothing is cached.
    Mx,
    ServFail,
    /// Never answers, over UDP or TCP.
    Silent,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    /// Queries received per configured domain.
    queries: HashMap<String, usize>,
}

pub struct FlakyDns {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FlakyDns {
    /// UDP and TCP on the same loopback port. TCP connections are accepted and never
    /// answered, so a client falling back to TCP still gets no answer.
    pub fn start() -> FlakyDns {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).expect("bind TCP on the UDP port");
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || serve(&udp, &tcp, &state, &stop))
        };
        FlakyDns {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn set(&self, domain: &str, answer: Answer) {
        let mut state = self.state.lock().unwrap();
        state.answers.insert(domain.to_ascii_lowercase(), answer);
    }

    /// How many queries for `domain` (or names under it) arrived so far.
    pub fn queries(&self, domain: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.queries.get(domain).copied().unwrap_or(0)
    }
}

impl Drop for FlakyDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(udp: &UdpSocket, tcp: &TcpListener, state: &Mutex<State>, stop: &AtomicBool) {
    let mut silent_tcp: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((stream, _)) = tcp.accept() {
            silent_tcp.push(stream);
        }
        let Ok((len, peer)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        if let Some(reply) = answer(&query, state) {
            let _ = udp.send_to(&reply.to_vec().unwrap(), peer);
        }
    }
}

/// The reply to `query`, or None to stay silent.
fn answer(query: &Message, state: &Mutex<State>) -> Option<Message> {
    let question = query.queries.first()?;
    let name = question.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let configured = {
        let mut state = state.lock().unwrap();
        let found = state
            .answers
            .iter()
            .find(|(domain, _)| name == *domain || name.ends_with(&format!(".{domain}")))
            .map(|(domain, answer)| (domain.clone(), *answer));
        if let Some((domain, _)) = &found {
            *state.queries.entry(domain.clone()).or_default() += 1;
        }
        found
    };
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let owner = question.name().clone();
    match configured {
        None => reply.metadata.response_code = ResponseCode::NXDomain,
        Some((_, Answer::Silent)) => return None,
        Some((_, Answer::ServFail)) => reply.metadata.response_code = ResponseCode::ServFail,
        Some((domain, Answer::Mx)) => match question.query_type() {
            RecordType::MX => {
                let exchange = Name::from_ascii(format!("mx.{domain}.")).unwrap();
                reply.add_answer(Record::from_rdata(
                    owner,
                    0,
                    RData::MX(MX::new(10, exchange)),
                ));
            }
            RecordType::A => {
                let a = RData::A(A(Ipv4Addr::LOCALHOST));
                reply.add_answer(Record::from_rdata(owner, 0, a));
            }
            _ => {}
        },
    }
    Some(reply)
}
