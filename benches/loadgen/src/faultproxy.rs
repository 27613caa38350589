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
//!
//! It also follows every item the collector refused on its own (an event by
//! its id, a counter by its report's id and position) to the last answer
//! about it that a client took in: an answer cut off mid-way, or one the
//! client never read because it was killed first, is not heard, and the
//! client then either sends the item again or, if the user withdrew in the
//! meantime, never does. A refusal whose last answer was not heard is one the
//! collector counted and no client can know of ([`FaultProxy::unheard_refusals`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telemetry_protocol::Uuid;
use telemetry_protocol::wire::{
    DELETE_PATH, DeleteRequest, INGEST_PATH, IngestPayload, IngestResponse,
};
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
/// How long the proxy waits, after an answer, for the client to close its
/// end: an orderly close means it read the whole answer.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Whether a refusal reason is one of an item on its own (the drill leaves
/// the others out of the collector's `refusals` too).
fn item_refusal(reason: &str) -> bool {
    reason != "ignored_field" && !reason.starts_with("downgraded_")
}

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

/// What the proxy knows of one refused item's answers.
#[derive(Debug, Clone, Copy, Default)]
struct RefusalTrail {
    /// Whether any answer refused it (the collector counts it once).
    refused: bool,
    /// Whether the last answer about it refused it and the client heard it.
    last_heard_refused: bool,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    upstream: Mutex<String>,
    log: Mutex<Vec<ProxyEvent>>,
    /// Every item a forwarded ingest carried, by item key; see
    /// [`FaultProxy::unheard_refusals`].
    trails: Mutex<HashMap<String, RefusalTrail>>,
    /// Refusals an answer counted but did not name (past
    /// `MAX_REFUSED_ITEMS`), which the proxy cannot follow.
    unnamed_refusals: std::sync::atomic::AtomicU64,
    /// Forwarded requests whose answer's fate is not known yet.
    forwarding: std::sync::atomic::AtomicUsize,
    http: reqwest::Client,
}

/// Counts a forwarded request in [`Shared::forwarding`] while it lives.
struct Forwarding<'a>(&'a Shared);

impl<'a> Forwarding<'a> {
    fn start(shared: &'a Shared) -> Forwarding<'a> {
        shared
            .forwarding
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Forwarding(shared)
    }
}

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        self.0
            .forwarding
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
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
            trails: Mutex::new(HashMap::new()),
            unnamed_refusals: std::sync::atomic::AtomicU64::new(0),
            forwarding: std::sync::atomic::AtomicUsize::new(0),
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

    /// Items the collector refused on their own whose last answer no client
    /// heard (cut off, or never read by a client killed first): the
    /// collector counted each once, and no client can count it. Answers
    /// still waiting for their client's close are not in it yet.
    pub fn unheard_refusals(&self) -> u64 {
        self.shared
            .trails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.refused && !t.last_heard_refused)
            .count() as u64
    }

    /// Refusals the collector counted but its answers did not name (beyond
    /// their first `MAX_REFUSED_ITEMS`), which [`Self::unheard_refusals`]
    /// cannot follow.
    pub fn unnamed_refusals(&self) -> u64 {
        self.shared
            .unnamed_refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits, at most `limit`, until no forwarded request is still waiting
    /// for its client; whether none is.
    pub async fn settled(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while self
            .shared
            .forwarding
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
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
    let _forwarding = Forwarding::start(&shared);
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
    let heard = match phase {
        Phase::ResetMidResponse => {
            shared.push(event);
            let bytes = answer.bytes();
            let _ = stream.write_all(&bytes[..bytes.len().min(12)]).await;
            let _ = stream.flush().await;
            reset(stream);
            false
        }
        _ => {
            if let Phase::Slow(delay) = phase {
                tokio::time::sleep(delay).await;
            }
            event.answered = answer.status;
            shared.push(event);
            answer_and_wait(&mut stream, &answer).await
        }
    };
    if request.path == INGEST_PATH {
        follow_refusals(&shared, &request, &answer, heard);
    }
}

/// Writes `answer`, then waits for the client to close its end; whether the
/// client read all of it. A client that closes with part of the answer
/// unread (killed before it read it) makes its kernel reset the connection;
/// one that read it all closes in order. A client that neither closes nor
/// resets within [`CLOSE_WAIT`] is taken to have heard it.
async fn answer_and_wait(stream: &mut TcpStream, answer: &Answer) -> bool {
    if stream.write_all(&answer.bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return false;
    }
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    });
    closed.await.unwrap_or(true)
}

/// Notes, for every item of a forwarded ingest, whether this answer refused
/// it and whether the client heard that; see [`FaultProxy::unheard_refusals`].
fn follow_refusals(shared: &Shared, request: &Request, answer: &Answer, heard: bool) {
    if !(200..300).contains(&answer.status) || request.content_encoding.is_some() {
        return;
    }
    let (Ok(payload), Ok(response)) = (
        serde_json::from_slice::<IngestPayload>(&request.body),
        serde_json::from_slice::<IngestResponse>(&answer.body),
    ) else {
        return;
    };
    let report = payload.report_id.map(|r| r.to_string()).unwrap_or_default();
    let key = |path: &str| -> String {
        // `events[3]...` names the event by its own id; anything else by the
        // report (or the install) and its path up to the item.
        let item = path.split('.').next().unwrap_or(path);
        if let Some(i) = item
            .strip_prefix("events[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|i| i.parse::<usize>().ok())
            && let Some(e) = payload.events.as_ref().and_then(|es| es.get(i))
        {
            return e.id.to_string();
        }
        let owner = payload
            .install_id
            .map(|i| i.to_string())
            .unwrap_or_else(|| report.clone());
        format!("{owner}/{item}")
    };
    let named: Vec<String> = response
        .refused_items
        .iter()
        .filter(|r| item_refusal(&r.reason))
        .map(|r| key(&r.path))
        .collect();
    let counted = response
        .refused_by_reason
        .iter()
        .filter(|(reason, _)| item_refusal(reason))
        .map(|(_, n)| *n)
        .sum::<u64>();
    shared.unnamed_refusals.fetch_add(
        counted.saturating_sub(named.len() as u64),
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut carried: Vec<String> = payload
        .events
        .iter()
        .flatten()
        .map(|e| e.id.to_string())
        .collect();
    let counters = payload.counters.as_ref().map_or(0, Vec::len);
    carried.extend((0..counters).map(|i| key(&format!("counters[{i}]"))));
    let mut trails = shared.trails.lock().unwrap_or_else(|p| p.into_inner());
    // Only items refused at some point are followed: a later answer about
    // one (a resend) decides whether its client heard of the refusal.
    for item in &named {
        trails.entry(item.clone()).or_default().refused = true;
    }
    for item in carried.iter().chain(&named) {
        if let Some(trail) = trails.get_mut(item) {
            trail.last_heard_refused = heard && named.contains(item);
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
