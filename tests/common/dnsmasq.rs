//! dnsmasq answering for the test domains.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// dnsmasq on a loopback port: MX for example.com and example.net, A records for their
/// mail hosts and for an MX-less domain, NXDOMAIN for every other name.
pub struct Dnsmasq {
    pub port: u16,
    child: Child,
}

impl Dnsmasq {
    pub fn start() -> Dnsmasq {
        for _ in 0..10 {
            let port = free_udp_port();
            let mut child = Command::new("dnsmasq")
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--pid-file",
                    "--no-resolv",
                    "--no-hosts",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--mx-host=example.com,mail.example.com,10",
                    "--mx-host=example.net,mx.example.net,10",
                    "--host-record=mail.example.com,127.0.0.1",
                    "--host-record=mx.example.net,127.0.0.1",
                    "--host-record=aonly.example.org,127.0.0.1",
                    // Everything not configured above is NXDOMAIN (nonexistent.invalid...).
                    "--local=/#/",
                ])
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dnsmasq (install dnsmasq-base: bash e2e/setup.sh)");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken between probe and bind: try another
                }
                if dns_answers(port) {
                    // stderr is not read any more; dnsmasq logs little without --log-queries.
                    return Dnsmasq { port, child };
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            eprintln!(
                "dnsmasq on port {port} did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("could not start dnsmasq");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.local_addr().unwrap().port()
}

/// True when an MX query for example.com gets a NOERROR answer on `port`.
fn dns_answers(port: u16) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 15, 0, 1]);
    if sock.send_to(&q, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv(&mut buf), Ok(n) if n > 12 && buf[0..2] == [0x12, 0x34] && buf[3] & 0xf == 0)
}
