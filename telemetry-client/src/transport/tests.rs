//! Every transport compiled into this test build, against real sockets on
//! 127.0.0.1: a small HTTP server standing in for the collector, and a
//! small HTTP proxy (CONNECT and absolute-form) that alone can resolve
//! `collector.invalid`, a name no resolver knows. So a request that reaches
//! the server through that name went through the proxy, and one that
//! bypasses the proxy for it cannot connect at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::*;

/// The transports of this build, each built for `route`.
fn transports(route: &Route) -> Vec<(&'static str, Box<dyn Transport>)> {
    // Only the ureq transports are pushed below, when they are built.
    #[cfg_attr(
        not(any(feature = "ureq", feature = "ureq-aws-lc-rs")),
        allow(unused_mut)
    )]
    let mut all: Vec<(&'static str, Box<dyn Transport>)> = vec![
        ("curl", Box::new(curl::Curl::new(route.clone()))),
        (
            "reqwest",
            Box::new(reqwest::Reqwest::new(route.clone()).unwrap()),
        ),
    ];
    #[cfg(any(feature = "ureq", feature = "ureq-aws-lc-rs"))]
    all.push(("ureq", Box::new(ureq::Ureq::new(route.clone()).unwrap())));
    all
}

fn route(endpoint: &str, env: &[(&str, String)]) -> Route {
    Route::new(endpoint, Duration::from_secs(10), |name| {
        env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head and `content-length` body).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen { head, body })
}

/// A stand-in collector that answers every request with `response` and
/// keeps what it was sent.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(response: &'static str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    if let Some(request) = read_request(&mut reader) {
                        log.lock().unwrap().push(request);
                        let mut stream = stream;
                        let _ = stream.write_all(response.as_bytes());
                    }
                });
            }
        });
        Server { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const ACCEPTED: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 42\r\nconnection: close\r\n\r\n{\"accepted\":3,\"duplicates\":0,\"refused\":2}\n";

/// A forward proxy that resolves only `collector.invalid`, to `target`,
/// and keeps the request lines it was asked to proxy.
struct Proxy {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                thread::spawn(move || proxy_one(client, target, &log));
            }
        });
        Proxy { addr, asked }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn proxy_one(client: TcpStream, target: SocketAddr, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    let line = request.head.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap().push(line.clone());
    let mut client = client;
    let known = line.contains(" collector.invalid:") || line.contains("//collector.invalid:");
    if !known {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    }
    let mut upstream = TcpStream::connect(target).unwrap();
    if line.starts_with("CONNECT ") {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
    } else {
        // Absolute form: pass the request on as it came.
        upstream.write_all(request.head.as_bytes()).unwrap();
        upstream.write_all(&request.body).unwrap();
    }
    let mut up_read = upstream.try_clone().unwrap();
    let mut client_write = client.try_clone().unwrap();
    let back = thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Write);
    });
    // Whatever the reader buffered after the head belongs upstream too.
    let buffered = reader.buffer().to_vec();
    let _ = upstream.write_all(&buffered);
    let mut rest = reader.into_inner();
    let _ = std::io::copy(&mut rest, &mut upstream);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_remote_endpoint_goes_through_the_proxy() {
    let server = Server::start(ACCEPTED);
    let proxy = Proxy::start(server.addr);
    let endpoint = format!("http://collector.invalid:{}", server.addr.port());
    // Only the proxy can resolve the name: a delivery proves the route.
    let env = [("HTTP_PROXY", proxy.url())];
    for (name, transport) in transports(&route(&endpoint, &env)) {
        let before = server.seen().len();
        let outcome = transport.post("/v1/ingest", br#"{"via":"proxy"}"#);
        assert_eq!(outcome, Outcome::Delivered { refused: 2 }, "{name}");
        let seen = server.seen();
        assert_eq!(seen.len(), before + 1, "{name}");
        assert_eq!(seen[before].body, br#"{"via":"proxy"}"#, "{name}");
        assert!(
            proxy
                .asked()
                .last()
                .is_some_and(|l| l.contains("collector.invalid")),
            "{name}: {:?}",
            proxy.asked()
        );
    }
}

#[test]
fn no_proxy_sends_directly_and_so_cannot_resolve_the_name() {
    let server = Server::start(ACCEPTED);
    let proxy = Proxy::start(server.addr);
    let endpoint = format!("http://collector.invalid:{}", server.addr.port());
    for list in ["collector.invalid", ".invalid", "*"] {
        let env = [("HTTP_PROXY", proxy.url()), ("no_proxy", list.to_owned())];
        for (name, transport) in transports(&route(&endpoint, &env)) {
            let outcome = transport.post("/v1/ingest", b"{}");
            assert!(
                matches!(outcome, Outcome::Failed(_)),
                "{name} {list}: {outcome:?}"
            );
        }
    }
    assert!(proxy.asked().is_empty(), "{:?}", proxy.asked());
    assert!(server.seen().is_empty());
}

#[test]
fn loopback_endpoints_stay_direct_whatever_the_proxy_variables_say() {
    let server = Server::start(ACCEPTED);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let env = [
        ("HTTPS_PROXY", dead.clone()),
        ("HTTP_PROXY", dead.clone()),
        ("ALL_PROXY", dead),
    ];
    for host in ["127.0.0.1", "localhost"] {
        let endpoint = format!("http://{host}:{}/", server.addr.port());
        for (name, transport) in transports(&route(&endpoint, &env)) {
            let outcome = transport.post("/v1/delete", b"{}");
            assert_eq!(outcome, Outcome::Delivered { refused: 2 }, "{name} {host}");
        }
    }
    let seen = server.seen();
    assert!(
        seen.iter().all(|s| s.head.starts_with("POST /v1/delete ")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|s| s.head.contains("telemetry-toolkit/")));
}

#[test]
fn statuses_mean_the_same_whatever_the_transport() {
    let cases: [(&'static str, Outcome); 3] = [
        (
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Outcome::RetryAfter(Some(Duration::from_secs(7)), "HTTP 429".into()),
        ),
        (
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 50\r\nconnection: close\r\n\r\n{\"error\":\"malformed_payload\",\"message\":\"bad json\"}",
            Outcome::Rejected("HTTP 400 malformed_payload: bad json".into()),
        ),
        (
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Outcome::Failed("HTTP 404".into()),
        ),
    ];
    for (response, expected) in cases {
        let server = Server::start(response);
        let endpoint = format!("http://127.0.0.1:{}", server.addr.port());
        for (name, transport) in transports(&route(&endpoint, &[])) {
            assert_eq!(transport.post("/v1/ingest", b"{}"), expected, "{name}");
        }
    }
}

#[test]
fn a_silent_collector_times_out_and_a_closed_port_cannot_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", listener.local_addr().unwrap());
    // Accepts and reads, never answers.
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let quick = Route::new(&silent, Duration::from_millis(800), |_| None).unwrap();
    for (name, transport) in transports(&quick) {
        assert_eq!(
            transport.post("/v1/ingest", b"{}"),
            Outcome::Failed("timed out".into()),
            "{name}"
        );
    }
    let closed = format!("http://127.0.0.1:{}", dead_port());
    for (name, transport) in transports(&route(&closed, &[])) {
        assert_eq!(
            transport.post("/v1/ingest", b"{}"),
            Outcome::Failed("cannot connect".into()),
            "{name}"
        );
    }
}

#[test]
fn without_curl_nothing_is_sent_and_the_reason_says_so() {
    let server = Server::start(ACCEPTED);
    let endpoint = format!("http://127.0.0.1:{}", server.addr.port());
    let missing = curl::Curl::with_program(route(&endpoint, &[]), "/nonexistent/bin/curl");
    assert_eq!(
        missing.post("/v1/ingest", b"{}"),
        Outcome::Failed(curl::MISSING.into())
    );
    assert!(server.seen().is_empty());
}

#[test]
fn endpoints_must_be_https_unless_loopback() {
    for ok in [
        "https://telemetry.example.org",
        "http://127.0.0.1:8750",
        "http://127.3.2.1",
        "http://[::1]:80/",
        "http://localhost:9000",
    ] {
        assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
    }
    for bad in [
        "http://telemetry.example.org",
        "http://10.0.0.1",
        "http://[::2]",
        "ftp://localhost",
        "not a url",
    ] {
        assert!(check_endpoint(bad).is_err(), "{bad}");
    }
}
