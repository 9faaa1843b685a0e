//! A load generator for tests whose servers really run as pods: submits continuously
//! with AUTH PLAIN over implicit TLS, round-robin over the addresses a test keeps current
//! (a Service's ready endpoints, as kube-proxy would spread them), each message tagged
//! `X-Test-Id: <n>`; records every id that got `250`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName};

use super::client_tls_config;

/// Who submits, and to what.
#[derive(Clone)]
pub struct Submission {
    pub user: String,
    pub password: String,
    pub rcpt: String,
    /// The server's certificate, pinned.
    pub cert: CertificateDer<'static>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    accepted: Arc<Mutex<BTreeSet<u64>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

/// What a load run did.
pub struct Outcome {
    pub accepted: BTreeSet<u64>,
    /// Submissions that did not get a 250 (refused connections during a rollout...).
    pub failures: Vec<String>,
}

impl Load {
    /// `workers` threads, each pausing `pause` between messages; ids start at `first_id`.
    pub fn start(
        targets: Arc<RwLock<Vec<SocketAddr>>>,
        submission: Submission,
        workers: usize,
        pause: Duration,
        first_id: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(BTreeSet::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let next_id = Arc::new(AtomicU64::new(first_id));
        let turn = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|_| {
                let (stop, accepted, failures) = (stop.clone(), accepted.clone(), failures.clone());
                let (targets, next_id, turn) = (targets.clone(), next_id.clone(), turn.clone());
                let submission = submission.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let target = {
                            let targets = targets.read().unwrap();
                            (!targets.is_empty()).then(|| {
                                targets[turn.fetch_add(1, Ordering::Relaxed) % targets.len()]
                            })
                        };
                        let Some(target) = target else {
                            thread::sleep(Duration::from_millis(100));
                            continue;
                        };
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        match submit(target, &submission, id) {
                            Ok(()) => {
                                accepted.lock().unwrap().insert(id);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{target}: {e}")),
                        }
                        thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            workers,
            accepted,
            failures,
        }
    }

    /// Ids accepted so far.
    pub fn accepted_count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    pub fn stop(mut self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        for worker in std::mem::take(&mut self.workers) {
            worker.join().unwrap();
        }
        Outcome {
            accepted: self.accepted.lock().unwrap().clone(),
            failures: self.failures.lock().unwrap().clone(),
        }
    }
}

/// A test that fails mid-load stops the workers too.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn reply(io: &mut BufReader<Tls>) -> Result<(u16, String), String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        match io.read_line(&mut line) {
            Ok(0) => return Err(format!("connection closed after {all:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("{e} after {all:?}")),
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            return Ok((code, all));
        }
    }
}

fn step(io: &mut BufReader<Tls>, line: Option<&str>, expect: u16) -> Result<(), String> {
    if let Some(line) = line {
        io.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("sending {line:?}: {e}"))?;
    }
    let (code, text) = reply(io)?;
    if code == expect {
        Ok(())
    } else {
        Err(format!("{line:?} got {}", text.trim_end()))
    }
}

/// One message in one session; Ok only on `250` after the data.
pub fn submit(target: SocketAddr, s: &Submission, id: u64) -> Result<(), String> {
    let tcp = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let name = ServerName::try_from("mail.example.com").unwrap();
    let tls =
        rustls::ClientConnection::new(Arc::new(client_tls_config(vec![s.cert.clone()])), name)
            .map_err(|e| e.to_string())?;
    let mut io = BufReader::new(rustls::StreamOwned::new(tls, tcp));
    step(&mut io, None, 220)?;
    step(&mut io, Some("EHLO load.example.org"), 250)?;
    let blob =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", s.user, s.password));
    step(&mut io, Some(&format!("AUTH PLAIN {blob}")), 235)?;
    step(&mut io, Some(&format!("MAIL FROM:<{}>", s.user)), 250)?;
    step(&mut io, Some(&format!("RCPT TO:<{}>", s.rcpt)), 250)?;
    step(&mut io, Some("DATA"), 354)?;
    let message = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: load {id}\r\nMessage-ID: <load-{id}@load.example.org>\r\nX-Test-Id: {id}\r\n\r\nmessage {id}\r\n.",
        s.user, s.rcpt
    );
    step(&mut io, Some(&message), 250)?;
    let _ = io.get_mut().write_all(b"QUIT\r\n");
    Ok(())
}
