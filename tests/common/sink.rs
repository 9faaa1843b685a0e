//! A small SMTP sink to stand for a relay host: STARTTLS with a test CA's certificate for
//! 127.0.0.1, any envelope accepted, and the `X-Test-Id` header of every message it
//! receives recorded (duplicates included), so a test can match what a load generator
//! got `250` for against what arrived. It can be made slow, so that senders build a queue.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::peers::certificates;

pub struct Sink {
    pub port: u16,
    /// The test CA that signed the sink's certificate (PEM), for the sender's trust store.
    pub ca_file: PathBuf,
    received: Arc<Mutex<BTreeMap<u64, usize>>>,
    delay: Arc<Mutex<Duration>>,
}

impl Sink {
    /// Listens on 127.0.0.1 with a certificate from a fresh CA written into `dir`.
    pub fn start(dir: &Path) -> Sink {
        certificates(dir, &[]);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("tls.crt"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(BTreeMap::new()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (seen, pause) = (received.clone(), delay.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, seen, pause) = (config.clone(), seen.clone(), pause.clone());
                thread::spawn(move || {
                    // A dropped or broken session is the sender's to retry.
                    let _ = session(stream, &config, &seen, &pause);
                });
            }
        });
        Sink {
            port,
            ca_file: dir.join("ca.crt"),
            received,
            delay,
        }
    }

    /// How long the sink waits before its answer to each message's data (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Times each test id was received.
    pub fn received(&self) -> BTreeMap<u64, usize> {
        self.received.lock().unwrap().clone()
    }
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// Line reader over a stream that STARTTLS may swap out (nothing is buffered past a
/// line, so no plaintext leaks into the TLS session).
struct Conn {
    io: Box<dyn Io + Send>,
}

impl Conn {
    fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if self.io.read(&mut byte)? == 0 {
                return Ok(None);
            }
            line.push(byte[0]);
            if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }

    fn reply(&mut self, text: &str) -> std::io::Result<()> {
        self.io.write_all(text.as_bytes())?;
        self.io.write_all(b"\r\n")?;
        self.io.flush()
    }
}

fn session(
    stream: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    seen: &Mutex<BTreeMap<u64, usize>>,
    delay: &Mutex<Duration>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut plain = Some(stream.try_clone()?);
    let mut conn = Conn {
        io: Box::new(stream),
    };
    conn.reply("220 sink.test ESMTP")?;
    while let Some(line) = conn.line()? {
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let tls = if plain.is_some() {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                conn.io
                    .write_all(format!("250-sink.test\r\n{tls}250 8BITMIME\r\n").as_bytes())?;
            }
            "STARTTLS" => {
                let Some(tcp) = plain.take() else {
                    conn.reply("503 5.5.1 TLS already active")?;
                    continue;
                };
                conn.reply("220 2.0.0 Ready to start TLS")?;
                let server =
                    rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
                conn.io = Box::new(rustls::StreamOwned::new(server, tcp));
            }
            "DATA" => {
                conn.reply("354 End data with <CR><LF>.<CR><LF>")?;
                let mut id = None;
                let mut headers = true;
                while let Some(line) = conn.line()? {
                    if line == "." {
                        break;
                    }
                    if line.is_empty() {
                        headers = false;
                    }
                    if headers && let Some(v) = line.strip_prefix("X-Test-Id:") {
                        id = v.trim().parse::<u64>().ok();
                    }
                }
                // Received is received, even if the sender goes before the answer (it
                // will send again: a duplicate, not a loss).
                if let Some(id) = id {
                    *seen.lock().unwrap().entry(id).or_default() += 1;
                }
                let pause = *delay.lock().unwrap();
                thread::sleep(pause);
                conn.reply("250 2.0.0 Ok: queued")?;
            }
            "QUIT" => {
                conn.reply("221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => conn.reply("250 2.0.0 Ok")?,
        }
    }
    Ok(())
}
