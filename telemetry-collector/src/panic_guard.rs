//! The last line of defence against a bug: a panic in any handler becomes a
//! `500` JSON answer instead of a connection closed without a word, and the
//! log records where it happened but nothing of what the request carried.
//!
//! Every parser is meant to be total, so a panic is a bug; this layer keeps
//! such a bug from turning into a silent hang-up for the client or into
//! attacker-chosen text in the operator's log. A panic message can quote the
//! input (`byte index 19 is not a char boundary ... of "<the request's
//! text>"`), so [`install_hook`] replaces the default hook, which prints the
//! message and a backtrace, with one that logs only the source location.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use telemetry_protocol::ErrorCode;

use crate::error::ApiError;

/// Middleware (for [`axum::middleware::from_fn`]) that answers `500` with
/// the `internal` error body when the rest of the stack panics.
pub async fn catch_panic(request: Request, next: Next) -> Response {
    match CatchUnwind(Box::pin(next.run(request))).await {
        Ok(response) => response,
        Err(()) => ApiError::new(
            ErrorCode::Internal,
            "the collector failed on this request; nothing was stored",
        )
        .into_response(),
    }
}

/// Polls a future inside `catch_unwind`, resolving to `Err` if it panicked.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The future is dropped right after a panic, never polled again, so
        // no broken invariant inside it can be observed.
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Replaces the process's panic hook with one that logs the source location
/// of a panic and its thread, never its message or a backtrace. The binary
/// calls it at start-up; tests leave the default hook alone.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        let thread = std::thread::current();
        tracing::error!(
            %location,
            thread = thread.name().unwrap_or("unnamed"),
            "a request handler panicked; the message is not logged because it may quote the request"
        );
    }));
}
