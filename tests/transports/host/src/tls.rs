//! The host's own TLS, with rustls's default provider (aws-lc-rs): a
//! round trip on loopback, and a TLS front for the collector.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// A private CA and a certificate it issued for `name`.
struct Certs {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn issue(name: &str) -> Result<Certs, String> {
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "transport-host test CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().map_err(err)?;
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .map_err(err)?
        .signed_by(&leaf_key, &issuer)
        .map_err(err)?;
    Ok(Certs {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        leaf: leaf.der().clone(),
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    })
}

/// A server config from the process-default provider (rustls's crate
/// features), as a host that never thinks about providers writes it.
fn server_config(certs: &Certs) -> Result<Arc<ServerConfig>, String> {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certs.leaf.clone()], certs.key.clone_key())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// A TLS round trip of the host's own on loopback: `ClientConfig::builder()`
/// panics if rustls has two providers and no process default.
pub(crate) fn check() -> Result<(), String> {
    let certs = issue("localhost")?;
    let server = server_config(&certs)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let serving = std::thread::spawn(move || -> Result<(), String> {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let conn = ServerConnection::new(server).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, sock);
        let mut line = String::new();
        BufReader::new(&mut tls)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        tls.write_all(format!("pong {line}").as_bytes())
            .map_err(|e| e.to_string())?;
        tls.conn.send_close_notify();
        tls.flush().map_err(|e| e.to_string())
    });
    let mut roots = RootCertStore::empty();
    roots.add(certs.ca_der.clone()).map_err(|e| e.to_string())?;
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(client), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(b"ping\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    serving
        .join()
        .map_err(|_| "the TLS server thread panicked")??;
    if answer != "pong ping\n" {
        return Err(format!("unexpected answer {answer:?}"));
    }
    println!(
        "tls ok: {}",
        tls.conn
            .negotiated_cipher_suite()
            .map_or("?".into(), |s| format!("{:?}", s.suite()))
    );
    Ok(())
}

/// Serves TLS for `collector.invalid` on a free loopback port, printed as
/// `listening <port>`, and passes each request to the collector at
/// `upstream`, one request per connection.
pub(crate) fn front(upstream: &str, ca_file: &str) -> Result<(), String> {
    let certs = issue("collector.invalid")?;
    std::fs::write(ca_file, &certs.ca_pem).map_err(|e| e.to_string())?;
    let server = server_config(&certs)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("listening {port}");
    for sock in listener.incoming().map_while(Result::ok) {
        let server = server.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            if let Err(e) = pass_on(server, sock, &upstream) {
                eprintln!("tls-front: {e}");
            }
        });
    }
    Ok(())
}

/// One request from a TLS client to the plain-HTTP collector and back.
fn pass_on(server: Arc<ServerConfig>, sock: TcpStream, upstream: &str) -> Result<(), String> {
    let conn = ServerConnection::new(server).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    let mut reader = BufReader::new(&mut tls);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        // One request per connection: the collector closes after answering.
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let mut up = TcpStream::connect(upstream).map_err(|e| e.to_string())?;
    up.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    up.write_all(&body).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    tls.write_all(&answer).map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    tls.flush().map_err(|e| e.to_string())
}
