//! Container probes: httpGet and tcpSocket against the pod's address, with the port
//! given by number or by the name of one of the container's ports.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The probe's settings with the Kubernetes defaults.
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(probe: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Timing {
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .with_context(|| format!("no container port named {name:?}"))?,
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("port {number} out of range"))
}

/// Runs the probe once against `ip`; Ok(()) is success.
pub async fn run(probe: &Probe, container: &Container, ip: &str) -> Result<()> {
    let timeout = timing(probe).timeout;
    tokio::time::timeout(timeout, attempt(probe, container, ip))
        .await
        .unwrap_or_else(|_| bail!("timed out after {timeout:?}"))
}

async fn attempt(probe: &Probe, container: &Container, ip: &str) -> Result<()> {
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.as_deref().unwrap_or(ip);
        TcpStream::connect((host, resolve_port(&tcp.port, container)?)).await?;
        return Ok(());
    }
    let Some(http) = &probe.http_get else {
        bail!("only httpGet and tcpSocket probes are supported");
    };
    if http.scheme.as_deref().is_some_and(|s| s != "HTTP") {
        bail!("only HTTP probes are supported");
    }
    let host = http.host.as_deref().unwrap_or(ip);
    let port = resolve_port(&http.port, container)?;
    let mut stream = TcpStream::connect((host, port)).await?;
    let path = http.path.as_deref().unwrap_or("/");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.20\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {line:?}"))?;
    // As the kubelet: 2xx and 3xx succeed.
    if (200..400).contains(&code) {
        Ok(())
    } else {
        bail!("HTTP probe failed with statuscode: {code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(json!({
            "name": "c",
            "ports": [{"name": "smtp", "containerPort": 2525}, {"name": "metrics", "containerPort": 9090}]
        }))
        .unwrap()
    }

    #[test]
    fn port_by_name_or_number() {
        let c = container();
        assert_eq!(
            resolve_port(&IntOrString::String("metrics".into()), &c).unwrap(),
            9090
        );
        assert_eq!(resolve_port(&IntOrString::Int(8080), &c).unwrap(), 8080);
        assert!(resolve_port(&IntOrString::String("http".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[test]
    fn defaults() {
        let t = timing(&Probe::default());
        assert_eq!(
            (
                t.initial_delay,
                t.period,
                t.timeout,
                t.success_threshold,
                t.failure_threshold
            ),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(1),
                1,
                3
            )
        );
    }

    #[tokio::test]
    async fn http_probe_against_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let probe: Probe =
            serde_json::from_value(json!({"httpGet": {"path": "/readyz", "port": port}})).unwrap();
        run(&probe, &container(), "127.0.0.1").await.unwrap();
        let err = run(&probe, &container(), "127.0.0.1").await.unwrap_err();
        assert_eq!(err.to_string(), "HTTP probe failed with statuscode: 503");
        server.await.unwrap();
    }
}
