//! TLS through the real binary: HTTPS with `curl --cacert` over HTTP/1.1 and HTTP/2, a
//! WebSocket over TLS with a rustls client, and a certificate reload on SIGHUP that new
//! connections see while an open one carries on.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::WebSocketStream;

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn der(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A TLS connection to `addr` that trusts only `ca` (PEM); returns the stream and the
/// certificate the server presented.
async fn tls_connect(addr: &str, ca: &str) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    try_tls_connect(addr, ca).await.expect("TLS handshake")
}

async fn try_tls_connect(
    addr: &str,
    ca: &str,
) -> Result<(TlsStream<TcpStream>, CertificateDer<'static>), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca)).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await?;
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((stream, presented))
}

async fn wss(addr: &str, ca: &str) -> WebSocketStream<TlsStream<TcpStream>> {
    let (stream, _) = tls_connect(addr, ca).await;
    let (ws, response) = within(
        "the WebSocket handshake over TLS",
        tokio_tungstenite::client_async(format!("wss://{addr}/ws"), stream),
    )
    .await
    .expect("WebSocket handshake");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

async fn next_json(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let message = within("a message over TLS", ws.next())
            .await
            .expect("open")
            .expect("a message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// `curl --cacert` to `url`; returns (HTTP version, body).
fn curl(ca: &Path, url: &str, http2: bool) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\n%{http_version}", url])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap();
    (version.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_wss_and_a_certificate_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed();
    write_pair(dir.path(), &first);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &first.0).unwrap();
    let cert = dir.path().join("cert.pem").to_string_lossy().into_owned();
    let key = dir.path().join("key.pem").to_string_lossy().into_owned();
    let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.log_text().contains("listening on https://"));

    // REST over HTTP/1.1 and HTTP/2, verified against the certificate.
    let url = format!("https://{}/api/health", server.addr());
    let (version, body) = curl(&ca, &url, false);
    assert_eq!(version, "1.1");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (version, _) = curl(&ca, &url, true);
    assert_eq!(version, "2");

    // A WebSocket over TLS: subscribe, write, receive.
    let mut ws = wss(server.addr(), &first.0).await;
    use futures_util::SinkExt;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let subscribe = json!({"type": "subscribe", "id": 1, "patterns": ["secure/#"]});
    ws.send(subscribe.to_string().into()).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "result");
    let set = json!({"type": "set", "id": 2, "topic": "secure/a", "state": {"x": 1}});
    ws.send(set.to_string().into()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next_json(&mut ws).await);
    }
    assert!(
        seen.iter()
            .any(|m| m["type"] == "snapshot" && m["topic"] == "secure/a")
    );

    // A new certificate and SIGHUP: new connections get it, the open one carries on.
    let second = self_signed();
    write_pair(dir.path(), &second);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let presented = within("the new certificate", async {
        loop {
            // Until the reload the server presents the old certificate, which the client
            // (trusting only the new one) refuses.
            if let Ok((_, presented)) = try_tls_connect(server.addr(), &second.0).await {
                return presented;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(presented, der(&second.0));
    let patch = json!({"type": "patch", "id": 3, "topic": "secure/a", "patch": {"x": 2}});
    ws.send(patch.to_string().into()).await.unwrap();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &serde_json::Value| m["type"] == "patch")
    {
        seen.push(next_json(&mut ws).await);
    }
    server.wait_log("TLS certificate reloaded").await;
}
