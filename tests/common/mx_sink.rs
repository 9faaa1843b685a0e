//! A small SMTP server standing in for the MX of example.net (127.0.0.1 in the harness's
//! dnsmasq; the server under test is pointed at it with `delivery.mxPort`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// An SMTP server for the MX of example.net: answers the first `defer` RCPTs with 451,
/// accepts the rest, and keeps each message it receives.
pub struct MxSink {
    pub port: u16,
    defer: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
    messages: Arc<Mutex<Vec<String>>>,
}

impl MxSink {
    pub fn start(defer: usize) -> MxSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = MxSink {
            port: listener.local_addr().unwrap().port(),
            defer: Arc::new(AtomicUsize::new(defer)),
            attempts: Arc::default(),
            messages: Arc::default(),
        };
        let (defer, attempts, messages) = (
            sink.defer.clone(),
            sink.attempts.clone(),
            sink.messages.clone(),
        );
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (defer, attempts, messages) =
                    (defer.clone(), attempts.clone(), messages.clone());
                thread::spawn(move || {
                    let _ = MxSink::session(stream, &defer, &attempts, &messages);
                });
            }
        });
        sink
    }

    fn session(
        stream: TcpStream,
        defer: &AtomicUsize,
        attempts: &AtomicUsize,
        messages: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut out = stream.try_clone()?;
        let mut lines = BufReader::new(stream);
        out.write_all(b"220 mx.example.net ESMTP sink\r\n")?;
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-mx.example.net\r\n250 8BITMIME\r\n",
                "RCPT" => {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let deferred = defer
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if deferred {
                        b"451 4.3.0 Try again later\r\n"
                    } else {
                        b"250 2.1.5 Ok\r\n"
                    }
                }
                "DATA" => {
                    out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                    let mut message = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line)? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        message.push_str(&line);
                    }
                    messages.lock().unwrap().push(message);
                    b"250 2.0.0 Ok: queued\r\n"
                }
                "QUIT" => {
                    out.write_all(b"221 2.0.0 Bye\r\n")?;
                    return Ok(());
                }
                _ => b"250 2.0.0 Ok\r\n",
            };
            out.write_all(reply)?;
        }
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    pub fn accept_from_now(&self) {
        self.defer.store(0, Ordering::SeqCst);
    }
}
