//! Connection limits on a real server on 127.0.0.1:0: slow and idle clients
//! are cut off, one source cannot hold every connection, and `/healthz`
//! keeps answering meanwhile. Timeouts are configured short so the test is
//! quick; nothing here times the server, it only waits (with a generous
//! bound) for each connection to be closed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use telemetry_collector::config::Config;
use tokio::sync::oneshot;

use crate::common::*;

/// How long a test waits for the server to close a connection before it
/// calls the connection held open. Far above every configured timeout.
const PATIENCE: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(tune: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tune(&mut cfg);
        let state = state(&cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(telemetry_collector::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            done: Some(done),
            _dir: dir,
        }
    }

    async fn healthz(&self) -> u16 {
        client()
            .get(format!("http://{}/healthz", self.addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.done.take().unwrap().await.unwrap().unwrap();
    }
}

/// Opens a blocking connection and sends `bytes`.
fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Reads until the server closes the connection; returns what it sent, or
/// panics if it kept the connection open for [`PATIENCE`].
fn read_until_closed(mut stream: TcpStream) -> String {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was still open after {PATIENCE:?}: {e}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs blocking socket work off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_lines_are_cut_off_and_healthz_keeps_answering() {
    let server = Server::start(|c| {
        c.connections.header_read_timeout_secs = 1;
        c.connections.max_per_source = 64;
    })
    .await;
    let addr = server.addr;
    let slow = blocking(move || {
        (0..40)
            .map(|_| open(addr, b"POST /v1/ing"))
            .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(
        server.healthz().await,
        200,
        "answers while 40 clients stall"
    );
    let closed = blocking(move || slow.into_iter().map(read_until_closed).count()).await;
    assert_eq!(closed, 40);
    assert_eq!(server.healthz().await, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_connection() {
    let server = Server::start(|c| {
        c.connections.max_per_source = 4;
    })
    .await;
    let addr = server.addr;
    let held = blocking(move || (0..4).map(|_| open(addr, b"")).collect::<Vec<_>>()).await;
    // The fifth connection from the same address is answered 503 and closed at once.
    let refused = blocking(move || read_until_closed(open(addr, b""))).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"error\":\"overloaded\""), "{refused}");
    drop(held);
    // Once they are gone, the source is welcome again.
    let mut ok = None;
    for _ in 0..100 {
        if let Ok(response) = client().get(format!("http://{addr}/healthz")).send().await
            && response.status() == 200
        {
            ok = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok.is_some(), "the freed slots were given back");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_connection_limit_answers_503() {
    let server = Server::start(|c| {
        c.connections.max_connections = 3;
        c.connections.max_per_source = 0;
    })
    .await;
    let addr = server.addr;
    let _held = blocking(move || (0..3).map(|_| open(addr, b"")).collect::<Vec<_>>()).await;
    let refused = blocking(move || read_until_closed(open(addr, b""))).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(_held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = Server::start(|c| {
        c.connections.keep_alive_idle_secs = 1;
    })
    .await;
    let addr = server.addr;
    let answer = blocking(move || {
        let stream = open(
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n",
        );
        read_until_closed(stream)
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_and_cut_off() {
    let server = Server::start(|c| {
        c.connections.body_read_timeout_secs = 1;
    })
    .await;
    let addr = server.addr;
    let answer = blocking(move || {
        let stream = open(
            addr,
            b"POST /v1/ingest HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"project\":",
        );
        read_until_closed(stream)
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("\"error\":\"malformed_payload\""),
        "{answer}"
    );
    server.stop().await;
}
