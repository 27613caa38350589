//! The accept loop and every limit on what one connection may hold: how many
//! connections are open in all and per source, how long a client may take to
//! send a request head or a body, and how long an idle keep-alive connection
//! is kept.
//!
//! Why not `axum::serve`: it sets none of these, so 40 clients that each sent
//! half a request line held 40 connections for ever. Here each connection is
//! served by hyper's HTTP/1 connection with
//! - a header read timeout (hyper's own), counted from the moment the
//!   connection starts waiting for a request head;
//! - a body read deadline per request (`DeadlineBody`): the whole body must
//!   arrive within it, so a body trickled one byte at a time is cut off;
//! - an idle timeout (`IdleTimeout`): no byte in either direction while no
//!   request is being handled closes the connection;
//! - a slot (`Slots`) taken at accept: past the total or the per-source
//!   limit, the connection is answered `503` and closed at once, so one
//!   source can never take every slot and `/healthz` keeps answering.
//!
//! The source address is a map key in memory while its connections are open,
//! and nothing else: it is never logged or stored.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::ConnectionConfig;

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then lets every open connection finish its request and waits for them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Slots::new(limits.max_connections, limits.max_per_source));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin.
                    tracing::debug!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Finished connections are reaped as new ones arrive, so the set
        // holds about as many tasks as there are open connections.
        while tasks.try_join_next().is_some() {}
        let Some(slot) = slots.take(peer.ip()) else {
            refuse(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            stopped.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The answer to a connection over a limit, written without waiting.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 76\r\n\r\n\
{\"error\":\"overloaded\",\"message\":\"too many connections; retry in a moment\"}";

fn refuse(stream: &TcpStream) {
    // Best effort: a fresh socket's send buffer takes this at once. Dropping
    // the stream closes it.
    let _ = stream.try_write(REFUSAL);
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionConfig,
    mut stop: watch::Receiver<bool>,
    _slot: Slot,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    let io = TokioIo::new(IdleTimeout::new(
        stream,
        limits.keep_alive_idle(),
        busy.clone(),
    ));
    let body_timeout = limits.body_read_timeout();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
        request.extensions_mut().insert(ConnectInfo(peer));
        let working = Working::start(&busy);
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(working);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        result = conn.as_mut() => Some(result),
        _ = stop.wait_for(|stopped| *stopped) => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            // Shutting down: finish the request in progress, take no other.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and resets are routine on the internet; the error says
        // which, and nothing about the peer.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Open connections, in all and per source, within their limits.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Most connections open at once.
    max_total: usize,
    /// Most connections open at once from one source; 0 for no limit.
    max_per_source: usize,
    /// The open count and the count per source. A source is in the map only
    /// while it has a connection open, so the map never holds more than
    /// `max_total` entries.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Slots {
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> Slots {
        Slots {
            max_total: max_total.max(1),
            max_per_source,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for a connection from `peer`, or `None` over a limit.
    pub(crate) fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let source = crate::ratelimit::normalize(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_source) = &mut *open;
        let mine = per_source.get(&source).copied().unwrap_or(0);
        if *total >= self.max_total || (self.max_per_source > 0 && mine >= self.max_per_source) {
            return None;
        }
        *total += 1;
        per_source.insert(source, mine + 1);
        Some(Slot {
            slots: self.clone(),
            source,
        })
    }

    /// Connections open now, in all.
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (open.0, open.1.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_source) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

/// Counts a request being handled on its connection, for [`IdleTimeout`].
struct Working(Arc<AtomicUsize>);

impl Working {
    fn start(busy: &Arc<AtomicUsize>) -> Working {
        busy.fetch_add(1, Ordering::Relaxed);
        Working(busy.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream that fails with `TimedOut` once no byte has moved
/// in either direction for `idle` while no request was being handled: the
/// keep-alive idle timeout. A slow handler never trips it.
struct IdleTimeout {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    busy: Arc<AtomicUsize>,
}

impl IdleTimeout {
    fn new(inner: TcpStream, idle: Duration, busy: Arc<AtomicUsize>) -> IdleTimeout {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            busy,
        }
    }

    fn touch(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// Whether the connection has been idle too long; registers a wake-up otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.busy.load(Ordering::Relaxed) > 0 {
            // Time spent handling a request is not idle time.
            self.touch();
        }
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// Passes on what a read or write of the stream gave: progress resets the
    /// idle deadline, and waiting past it fails with `TimedOut`.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.touch();
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.watch(cx, poll)
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A client that stops reading its answer is idle too.
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a request body fails with once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] if it has not been fully
/// received by its deadline, set when the request head arrived.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error`, or an error it wraps, is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimeout>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_the_total_and_per_source_limits_and_come_back() {
        let slots = Arc::new(Slots::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "per-source limit");
        let _third = slots.take(b).unwrap();
        assert!(slots.take(b_same_64).is_none(), "total limit");
        drop(first);
        assert!(slots.take(b_same_64).is_some(), "a /64 is one source");
        assert_eq!(slots.open(), (2, 2), "the freed slot was reused");
    }
}
