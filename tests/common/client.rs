//! A small raw SMTP client for what swaks and openssl cannot do: BDAT, pipelined
//! floods, garbage, dropped sessions, STARTTLS by hand.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName};

use super::*;

#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    /// Full lines as sent, e.g. `["250-mail.example.com", "250 DSN"]`.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A blocking SMTP client that shows exactly what the server answers.
pub struct Client {
    io: BufReader<Stream>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        Client::over(sock)
    }

    pub fn connect_from(port: u16, source: std::net::Ipv4Addr) -> Client {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((source, 0)).into())
            .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
        sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap_or_else(|e| panic!("connect from {source} to 127.0.0.1:{port}: {e}"));
        Client::over(sock.into())
    }

    fn over(sock: TcpStream) -> Client {
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            io: BufReader::new(Stream::Plain(sock)),
        }
    }

    /// Implicit TLS (465); the greeting is still unread.
    pub fn connect_tls(port: u16, trusted: Vec<CertificateDer<'static>>) -> Client {
        let mut c = Client::connect(port);
        c.handshake(trusted);
        c
    }

    /// A clone of the TCP socket, for writing from another thread.
    pub fn try_clone_plain(&self) -> TcpStream {
        match self.io.get_ref() {
            Stream::Plain(s) => s.try_clone().unwrap(),
            Stream::Tls(_) => panic!("cannot clone a TLS stream"),
        }
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        let sock = match self.io.get_ref() {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        };
        sock.set_read_timeout(Some(timeout)).unwrap();
    }

    /// TLS handshake on the current socket (after a 220 to STARTTLS, or on 465).
    pub fn handshake(&mut self, trusted: Vec<CertificateDer<'static>>) {
        self.try_handshake(trusted)
            .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
    }

    pub fn try_handshake(&mut self, trusted: Vec<CertificateDer<'static>>) -> Result<(), String> {
        assert!(
            self.io.buffer().is_empty(),
            "plaintext left in the buffer before TLS"
        );
        let placeholder = Stream::Plain(self.try_clone_plain());
        let Stream::Plain(sock) = std::mem::replace(self.io.get_mut(), placeholder) else {
            unreachable!()
        };
        let conn = rustls::ClientConnection::new(
            Arc::new(client_tls_config(trusted)),
            ServerName::try_from(HOSTNAME).unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| e.to_string())?;
        }
        self.io = BufReader::new(Stream::Tls(Box::new(tls)));
        Ok(())
    }

    pub fn starttls(&mut self, trusted: Vec<CertificateDer<'static>>) {
        self.cmd_expect("STARTTLS", 220);
        self.handshake(trusted);
    }

    /// Negotiated protocol version, e.g. `Some(TLSv1_3)`.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self.io.get_ref() {
            Stream::Tls(s) => s.conn.protocol_version(),
            Stream::Plain(_) => None,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.get_mut().write_all(bytes)?;
        self.io.get_mut().flush()
    }

    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("sending {line:?}: {e}"));
    }

    /// One reply (all its lines); errors on EOF, timeout or garbage.
    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self.io.read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {lines:?}"),
                ));
            }
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not a reply line: {line:?}"),
                    )
                })?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    pub fn reply(&mut self) -> Reply {
        self.read_reply()
            .unwrap_or_else(|e| panic!("reading reply: {e}"))
    }

    pub fn expect_code(&mut self, code: u16) -> Reply {
        let r = self.reply();
        assert_eq!(r.code, code, "unexpected reply {:?}", r.lines);
        r
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send_line(line);
        self.read_reply()
            .unwrap_or_else(|e| panic!("reply to {line:?}: {e}"))
    }

    pub fn cmd_expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "reply to {line:?}: {:?}", r.lines);
        r
    }

    pub fn auth_plain(&mut self, user: &str, pass: &str) -> Reply {
        let blob = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        self.cmd(&format!("AUTH PLAIN {blob}"))
    }

    /// True when the server has closed the connection (EOF or reset within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.io.read(&mut buf), Ok(0) | Err(_))
    }

    /// Reads until the server closes; returns whatever came.
    pub fn read_to_close(&mut self) -> String {
        let mut all = Vec::new();
        let _ = self.io.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// rustls client config trusting exactly the given (self-signed) server certificates.
pub fn client_tls_config(trusted: Vec<CertificateDer<'static>>) -> rustls::ClientConfig {
    posthorn::tls::pinned_client_config(trusted).unwrap()
}
