//! The endpoints the overhead harness points a CLI at, all on loopback.
//!
//! - [`EndpointMode::Up`]: a URL the caller passes, e.g. a real collector.
//! - [`EndpointMode::Stub`]: a minimal HTTP/1.1 server answering every request
//!   `200` with an ingest answer, for when no collector is at hand.
//! - [`EndpointMode::Refused`]: a loopback port with nothing listening.
//! - [`EndpointMode::Blackhole`]: accepts connections, reads whatever comes,
//!   never answers.
//! - [`EndpointMode::BlackholeNoAccept`]: a bound, listening socket that never
//!   calls `accept`; the kernel completes the handshake, nobody reads.
//!
//! Held connections are bounded in time: each is dropped after a hold limit,
//! and all of them when the [`Endpoint`] is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;

/// Which kind of endpoint to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointMode {
    /// A URL the caller passes (`up=URL`), e.g. a running collector.
    Up(String),
    /// A stub HTTP server that answers 200 (`stub`).
    Stub,
    /// A loopback port nobody listens on (`refused`).
    Refused,
    /// A listener that accepts and never answers (`blackhole`).
    Blackhole,
    /// A listener that never accepts (`blackhole-noaccept`).
    BlackholeNoAccept,
}

impl EndpointMode {
    /// The short name used on command lines and in result tables.
    pub fn name(&self) -> &'static str {
        match self {
            EndpointMode::Up(_) => "up",
            EndpointMode::Stub => "stub",
            EndpointMode::Refused => "refused",
            EndpointMode::Blackhole => "blackhole",
            EndpointMode::BlackholeNoAccept => "blackhole-noaccept",
        }
    }
}

impl FromStr for EndpointMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "stub" => EndpointMode::Stub,
            "refused" => EndpointMode::Refused,
            "blackhole" => EndpointMode::Blackhole,
            "blackhole-noaccept" => EndpointMode::BlackholeNoAccept,
            _ => match s.strip_prefix("up=") {
                Some(url) if !url.is_empty() => EndpointMode::Up(url.to_owned()),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown endpoint `{s}`; use up=URL, stub, refused, blackhole or blackhole-noaccept"
                    )));
                }
            },
        })
    }
}

/// A running endpoint. Dropping it stops its threads and closes every socket.
#[derive(Debug)]
pub struct Endpoint {
    mode: EndpointMode,
    url: String,
    /// How many connections the endpoint accepted (0 for `up` and `refused`,
    /// and for `blackhole-noaccept`, which accepts none).
    connections: Arc<AtomicU64>,
    /// How many complete HTTP requests the stub answered.
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    addr: Option<SocketAddr>,
    /// Kept open so the port stays bound (never-accepting blackhole).
    _listener: Option<TcpListener>,
    acceptor: Option<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Endpoint {
    /// Starts an endpoint. `hold_limit` bounds how long a blackhole or the stub
    /// keeps one connection open.
    pub fn start(mode: EndpointMode, hold_limit: Duration) -> Result<Endpoint, Error> {
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handlers = Arc::new(Mutex::new(Vec::new()));
        let mut endpoint = Endpoint {
            mode: mode.clone(),
            url: String::new(),
            connections: connections.clone(),
            requests: requests.clone(),
            stop: stop.clone(),
            addr: None,
            _listener: None,
            acceptor: None,
            handlers: handlers.clone(),
        };
        let bind =
            || TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("binding 127.0.0.1:0", e));
        let url_of = |addr: SocketAddr| format!("http://{addr}");
        match mode {
            EndpointMode::Up(url) => endpoint.url = url,
            EndpointMode::Refused => {
                let addr = refused_addr()?;
                endpoint.url = url_of(addr);
            }
            EndpointMode::BlackholeNoAccept => {
                let listener = bind()?;
                let addr = local_addr(&listener)?;
                endpoint.url = url_of(addr);
                endpoint._listener = Some(listener);
            }
            EndpointMode::Stub | EndpointMode::Blackhole => {
                let listener = bind()?;
                let addr = local_addr(&listener)?;
                endpoint.url = url_of(addr);
                endpoint.addr = Some(addr);
                let answer = mode == EndpointMode::Stub;
                let acceptor = std::thread::Builder::new()
                    .name(format!("endpoint-{}", mode.name()))
                    .spawn(move || {
                        for stream in listener.incoming() {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let Ok(stream) = stream else { continue };
                            connections.fetch_add(1, Ordering::Relaxed);
                            let (stop, requests) = (stop.clone(), requests.clone());
                            let handler = std::thread::spawn(move || {
                                if answer {
                                    serve_stub(stream, hold_limit, &stop, &requests);
                                } else {
                                    hold(stream, hold_limit, &stop);
                                }
                            });
                            let mut handlers = handlers.lock().unwrap_or_else(|e| e.into_inner());
                            handlers.retain(|h| !h.is_finished());
                            handlers.push(handler);
                        }
                    })
                    .map_err(|e| Error::io("starting the endpoint thread", e))?;
                endpoint.acceptor = Some(acceptor);
            }
        }
        Ok(endpoint)
    }

    /// The base URL to give the command under test, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The endpoint's mode.
    pub fn mode(&self) -> &EndpointMode {
        &self.mode
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests the stub answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(addr) = self.addr {
            // Wake the blocking accept so the thread sees the stop flag.
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handlers =
            std::mem::take(&mut *self.handlers.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handlers {
            let _ = h.join();
        }
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|e| Error::io("reading the listener address", e))
}

/// A loopback address with nothing listening: bind an ephemeral port, close it,
/// and check that a connection is refused. Retries a few times in case another
/// process grabbed the port in between.
fn refused_addr() -> Result<SocketAddr, Error> {
    for _ in 0..10 {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
            local_addr(&listener)?
        };
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(addr),
            _ => continue,
        }
    }
    Err(Error::io(
        "finding a refused loopback port",
        std::io::Error::other("every candidate port was taken"),
    ))
}

/// How often a held connection checks the stop flag and its hold limit.
const POLL: Duration = Duration::from_millis(100);

/// Reads and discards until the peer closes, the hold limit passes or the
/// endpoint stops; never writes a byte.
fn hold(mut stream: TcpStream, hold_limit: Duration, stop: &AtomicBool) {
    let start = Instant::now();
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 4096];
    while start.elapsed() < hold_limit && !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The stub's answer body: a valid ingest answer for one accepted event.
const STUB_BODY: &str = r#"{"accepted":1,"duplicates":0}"#;

/// Answers every HTTP/1.1 request on the connection with 200 and
/// [`STUB_BODY`], keeping the connection alive, until the peer closes, the
/// hold limit passes, the endpoint stops, or a request cannot be parsed.
fn serve_stub(stream: TcpStream, hold_limit: Duration, stop: &AtomicBool, requests: &AtomicU64) {
    let start = Instant::now();
    let _ = stream.set_read_timeout(Some(POLL));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let alive = || start.elapsed() < hold_limit && !stop.load(Ordering::Relaxed);
        match read_request(&mut reader, &alive) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{STUB_BODY}",
            STUB_BODY.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one request (head and body). `Ok(false)` when the peer closed before
/// a request started or `alive` turned false.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    alive: &dyn Fn() -> bool,
) -> std::io::Result<bool> {
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut first = true;
    loop {
        let Some(line) = read_line(reader, alive)? else {
            return Ok(false);
        };
        let line = line.trim_end();
        if line.is_empty() {
            if first {
                // Tolerate stray blank lines between keep-alive requests.
                continue;
            }
            break;
        }
        first = false;
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().map_err(std::io::Error::other)?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    if chunked {
        loop {
            let Some(size) = read_line(reader, alive)? else {
                return Ok(false);
            };
            let size = size.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
            // The chunk plus its trailing CRLF; the last chunk has a trailer line.
            read_exact(reader, size + 2, alive)?;
            if size == 0 {
                return Ok(true);
            }
        }
    }
    read_exact(reader, content_length, alive)?;
    Ok(true)
}

fn read_line(
    reader: &mut BufReader<TcpStream>,
    alive: &dyn Fn() -> bool,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        if !alive() {
            return Ok(None);
        }
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(None),
            Ok(_) if line.ends_with(b"\n") => {
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

fn read_exact(
    reader: &mut BufReader<TcpStream>,
    mut n: usize,
    alive: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    while n > 0 {
        if !alive() {
            return Err(std::io::Error::other("endpoint stopping"));
        }
        match reader.read(&mut buf[..n.min(8192)]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => n -= k,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(30);

    fn addr_of(url: &str) -> SocketAddr {
        url.trim_start_matches("http://").parse().unwrap()
    }

    #[test]
    fn modes_parse_from_their_names() {
        for mode in [
            EndpointMode::Stub,
            EndpointMode::Refused,
            EndpointMode::Blackhole,
            EndpointMode::BlackholeNoAccept,
        ] {
            assert_eq!(mode.name().parse::<EndpointMode>().unwrap(), mode);
        }
        assert_eq!(
            "up=http://127.0.0.1:8750".parse::<EndpointMode>().unwrap(),
            EndpointMode::Up("http://127.0.0.1:8750".into())
        );
        assert!("up=".parse::<EndpointMode>().is_err());
        assert!("nowhere".parse::<EndpointMode>().is_err());
    }

    #[test]
    fn refused_endpoint_refuses_connections() {
        let ep = Endpoint::start(EndpointMode::Refused, HOLD).unwrap();
        let err = TcpStream::connect(addr_of(ep.url())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// Sends a request and waits up to `wait` for any answer byte.
    fn first_answer_byte(addr: SocketAddr, wait: Duration) -> std::io::Result<usize> {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(b"POST /v1/ingest HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")?;
        s.set_read_timeout(Some(wait))?;
        s.read(&mut [0u8; 64])
    }

    #[test]
    fn blackholes_accept_the_connection_and_never_answer() {
        for mode in [EndpointMode::Blackhole, EndpointMode::BlackholeNoAccept] {
            let ep = Endpoint::start(mode.clone(), HOLD).unwrap();
            let err = first_answer_byte(addr_of(ep.url()), Duration::from_millis(300))
                .expect_err("a blackhole must neither answer nor close");
            assert!(is_timeout(&err), "{mode:?}: {err}");
            if mode == EndpointMode::Blackhole {
                assert_eq!(ep.connections(), 1);
            }
        }
    }

    #[test]
    fn held_connections_are_released_after_the_hold_limit() {
        let ep = Endpoint::start(EndpointMode::Blackhole, Duration::from_millis(200)).unwrap();
        let mut s = TcpStream::connect(addr_of(ep.url())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The blackhole shuts the socket down once the limit passes: EOF, not an answer.
        assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0);
    }

    #[test]
    fn stub_answers_keep_alive_requests_including_chunked_ones() {
        let ep = Endpoint::start(EndpointMode::Stub, HOLD).unwrap();
        let mut s = TcpStream::connect(addr_of(ep.url())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let requests: [&[u8]; 2] = [
            b"POST /v1/ingest HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
            b"POST /batch HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ];
        let mut reader = BufReader::new(s.try_clone().unwrap());
        for (i, request) in requests.iter().enumerate() {
            s.write_all(request).unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert_eq!(status.trim_end(), "HTTP/1.1 200 OK");
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            let mut body = vec![0u8; STUB_BODY.len()];
            reader.read_exact(&mut body).unwrap();
            assert_eq!(body, STUB_BODY.as_bytes());
            assert_eq!(ep.requests(), i as u64 + 1);
        }
    }
}
