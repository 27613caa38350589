//! A fault-injecting HTTP proxy for the fleet drill (issue 13): it sits on
//! loopback between the clients and a real collector and, in phases the drill
//! switches, is down, refuses, blackholes, answers 500, 503 or 429 with
//! `Retry-After`, answers 413 above a body size, is slow, resets the
//! connection half-way through the collector's answer, or passes through.
//!
//! It speaks just enough HTTP/1.1 for the client's uploader: one request per
//! connection (every answer says `Connection: close`), bodies sized by
//! `Content-Length`. Written on raw sockets rather than on hyper because the
//! faults are below HTTP: a reset after half an answer, a listener that is
//! really closed, a connection accepted and never read.
//!
//! Every request is logged with what the proxy did and, for `/v1/delete`,
//! the install id whose deletion went through, so the drill can time
//! opt-outs from the moment they were asked to the moment the collector
//! acknowledged them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telemetry_protocol::Uuid;
use telemetry_protocol::wire::{DELETE_PATH, DeleteRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body the proxy reads (the collector's limit is lower).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long a blackholed connection is held before the proxy lets go: far
/// beyond the client's 10 s request timeout, and still bounded.
const BLACKHOLE_HOLD: Duration = Duration::from_secs(60);
/// How long a client has to send its whole request.
const READ_LIMIT: Duration = Duration::from_secs(15);

/// What the proxy does with the next connection or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The listener is closed: connections are refused by the kernel.
    Down,
    /// Connections are accepted and reset at once, before any byte is read.
    Refuse,
    /// Connections are accepted and never read or answered.
    Blackhole,
    /// Every request is answered 500.
    Status500,
    /// Every request is answered 503 with this `Retry-After`, in seconds.
    Status503(u64),
    /// Every request is answered 429 with this `Retry-After`, in seconds.
    Status429(u64),
    /// Bodies over this many bytes are answered 413; smaller ones pass.
    TooLarge(usize),
    /// Requests pass through, and the answer waits this long first.
    Slow(Duration),
    /// Requests pass through (the collector commits), then the answer is
    /// cut off after a few bytes with a TCP reset.
    ResetMidResponse,
    /// Requests pass through untouched.
    Pass,
}

impl Phase {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Phase::Down => "down".into(),
            Phase::Refuse => "refuse".into(),
            Phase::Blackhole => "blackhole".into(),
            Phase::Status500 => "500".into(),
            Phase::Status503(s) => format!("503 Retry-After {s}"),
            Phase::Status429(s) => format!("429 Retry-After {s}"),
            Phase::TooLarge(n) => format!("413 over {n} B"),
            Phase::Slow(d) => format!("slow {} ms", d.as_millis()),
            Phase::ResetMidResponse => "reset mid-response".into(),
            Phase::Pass => "pass".into(),
        }
    }

    /// Whether a request sent in this phase can reach the collector and get
    /// its answer back.
    pub fn reachable(&self) -> bool {
        matches!(self, Phase::Pass | Phase::Slow(_) | Phase::TooLarge(_))
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEvent {
    /// When it was read, since the proxy's epoch.
    pub at: Duration,
    /// The phase it met.
    pub phase: String,
    /// The request path (empty when nothing was read).
    pub path: String,
    /// Body bytes.
    pub body_len: usize,
    /// The status the client was sent; 0 when it got none (reset, blackhole).
    pub answered: u16,
    /// The collector's status, when the request was forwarded.
    pub upstream: Option<u16>,
    /// For a forwarded `/v1/delete`: the install id in it.
    pub delete_id: Option<Uuid>,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    upstream: Mutex<String>,
    log: Mutex<Vec<ProxyEvent>>,
    http: reqwest::Client,
}

impl Shared {
    fn push(&self, event: ProxyEvent) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }
}

/// A running proxy on `127.0.0.1`; it stops with the runtime it was started on.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    phase: watch::Sender<Phase>,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts the proxy on `127.0.0.1:0` in front of `upstream` (an
    /// `http://127.0.0.1:port` URL), in [`Phase::Pass`]. Times in the log
    /// count from `epoch`. Must be called inside a tokio runtime.
    pub async fn start(upstream: &str, epoch: Instant) -> Result<FaultProxy, Error> {
        let url = reqwest::Url::parse(upstream).map_err(|e| Error::InvalidUrl {
            url: upstream.to_owned(),
            reason: e.to_string(),
        })?;
        crate::ingest::require_loopback(&url).await?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the fault proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the fault proxy's address", e))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(Error::Client)?;
        let shared = Arc::new(Shared {
            epoch,
            upstream: Mutex::new(upstream.trim_end_matches('/').to_owned()),
            log: Mutex::new(Vec::new()),
            http,
        });
        let (phase, rx) = watch::channel(Phase::Pass);
        tokio::spawn(accept_loop(listener, addr, rx, shared.clone()));
        Ok(FaultProxy {
            addr,
            phase,
            shared,
        })
    }

    /// The URL clients should use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches to `phase` for every connection from now on.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// The phase in force.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Points the proxy at another collector (after a restart on a new port).
    pub fn set_upstream(&self, upstream: &str) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = upstream.trim_end_matches('/').to_owned();
    }

    /// Every request seen so far.
    pub fn log(&self) -> Vec<ProxyEvent> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Accepts while the phase is not [`Phase::Down`]; while it is, the listener
/// is closed, and it is bound again on the same port afterwards.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    mut rx: watch::Receiver<Phase>,
    shared: Arc<Shared>,
) {
    let mut listener = Some(listener);
    loop {
        let phase = *rx.borrow_and_update();
        if phase == Phase::Down {
            listener = None;
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            // The port was ours a moment ago; bind it again, retrying briefly
            // in case the kernel has not let go of it yet.
            for _ in 0..100 {
                if let Ok(l) = TcpListener::bind(addr).await {
                    listener = Some(l);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if listener.is_none() {
                tracing::warn!(%addr, "the fault proxy could not bind its port again");
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
        }
        let Some(l) = listener.as_ref() else { continue };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(handle(stream, rx.clone(), shared.clone()));
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Closes `stream` with a TCP reset instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn handle(mut stream: TcpStream, rx: watch::Receiver<Phase>, shared: Arc<Shared>) {
    let at = shared.epoch.elapsed();
    let phase = *rx.borrow();
    let mut event = ProxyEvent {
        at,
        phase: phase.name(),
        path: String::new(),
        body_len: 0,
        answered: 0,
        upstream: None,
        delete_id: None,
    };
    match phase {
        Phase::Refuse => {
            shared.push(event);
            reset(stream);
            return;
        }
        Phase::Blackhole => {
            shared.push(event);
            tokio::time::sleep(BLACKHOLE_HOLD).await;
            return;
        }
        _ => {}
    }
    let request = match tokio::time::timeout(READ_LIMIT, read_request(&mut stream)).await {
        Ok(Ok(r)) => r,
        _ => {
            event.path = "(unreadable request)".into();
            shared.push(event);
            return;
        }
    };
    event.path = request.path.clone();
    event.body_len = request.body.len();
    let answer = match phase {
        Phase::Status500 => Some(error_answer(500, None)),
        Phase::Status503(after) => Some(error_answer(503, Some(after))),
        Phase::Status429(after) => Some(error_answer(429, Some(after))),
        Phase::TooLarge(limit) if request.body.len() > limit => Some(error_answer(413, None)),
        _ => None,
    };
    if let Some(answer) = answer {
        event.answered = answer.status;
        shared.push(event);
        let _ = stream.write_all(&answer.bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let upstream = shared
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let answer = match forward(&shared.http, &upstream, &request).await {
        Ok(answer) => answer,
        Err(_) => {
            // The collector is between restarts: the client sees what it
            // would see of a collector that is down for a moment.
            event.answered = 502;
            shared.push(event);
            let _ = stream.write_all(&error_answer(502, None).bytes()).await;
            return;
        }
    };
    event.upstream = Some(answer.status);
    if request.path == DELETE_PATH && (200..300).contains(&answer.status) {
        event.delete_id = serde_json::from_slice::<DeleteRequest>(&request.body)
            .ok()
            .map(|d| d.install_id);
    }
    match phase {
        Phase::ResetMidResponse => {
            shared.push(event);
            let bytes = answer.bytes();
            let _ = stream.write_all(&bytes[..bytes.len().min(12)]).await;
            let _ = stream.flush().await;
            reset(stream);
        }
        Phase::Slow(delay) => {
            tokio::time::sleep(delay).await;
            event.answered = answer.status;
            shared.push(event);
            let _ = stream.write_all(&answer.bytes()).await;
            let _ = stream.shutdown().await;
        }
        _ => {
            event.answered = answer.status;
            shared.push(event);
            let _ = stream.write_all(&answer.bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// A request as read off the socket.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed before the head ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    let mut content_type = None;
    let mut content_encoding = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| bad("bad content-length"))?,
            "content-type" => content_type = Some(value.to_owned()),
            "content-encoding" => content_encoding = Some(value.to_owned()),
            "transfer-encoding" => return Err(bad("chunked bodies are not supported")),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err(bad("body too large"));
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed before the body ended"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Request {
        method,
        path,
        content_type,
        content_encoding,
        body,
    })
}

/// An answer to write back.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", self.status);
        if let Some(ct) = &self.content_type {
            out.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if let Some(ra) = &self.retry_after {
            out.push_str(&format!("Retry-After: {ra}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn error_answer(status: u16, retry_after: Option<u64>) -> Answer {
    let code = match status {
        413 => "payload_too_large",
        429 => "rate_limited",
        _ => "unavailable",
    };
    Answer {
        status,
        content_type: Some("application/json".into()),
        retry_after: retry_after.map(|s| s.to_string()),
        body: format!(r#"{{"error":"{code}","message":"injected by the fault proxy"}}"#)
            .into_bytes(),
    }
}

async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    request: &Request,
) -> Result<Answer, reqwest::Error> {
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut builder = http
        .request(method, format!("{upstream}{}", request.path))
        .body(request.body.clone());
    if let Some(ct) = &request.content_type {
        builder = builder.header("content-type", ct);
    }
    if let Some(ce) = &request.content_encoding {
        builder = builder.header("content-encoding", ce);
    }
    let response = builder.send().await?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let retry_after = header("retry-after");
    let body = response.bytes().await?.to_vec();
    Ok(Answer {
        status,
        content_type,
        retry_after,
        body,
    })
}
