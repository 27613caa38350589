//! The write queue both backends share: the jobs a `Store` hands its single
//! writer, their answers, and the typed calls the `Store` impls delegate to.
//!
//! Each backend runs one writer that drains this queue and commits whatever is
//! waiting in one transaction (group commit). Only the writer differs between
//! backends; the queue, its back-pressure (`QueueFull` when a client write
//! finds no room) and the mapping of answers are the same, so they live here.

use std::sync::atomic::AtomicU64;

use telemetry_protocol::Day;
use tokio::sync::{mpsc, oneshot};

use super::{
    IngestBatch, IngestOutcome, InstallHash, PurgeOutcome, RetentionPolicy, Skew, StoreError,
    StoreFuture,
};

/// Commit counters a writer updates, for `/metrics`.
#[derive(Default)]
pub(super) struct CommitTiming {
    /// Transactions committed.
    pub(super) commits: AtomicU64,
    /// Total commit time, in nanoseconds.
    pub(super) nanos_sum: AtomicU64,
    /// The slowest commit, in nanoseconds.
    pub(super) nanos_max: AtomicU64,
}

/// One write.
pub(super) enum Op {
    /// Store a validated ingest request and count what it refused.
    Ingest(IngestBatch, Skew),
    /// Delete every row of one install.
    Delete {
        /// The project.
        project: String,
        /// The pseudonymized install id.
        install: InstallHash,
    },
    /// Purge raw rows older than the retention.
    Purge {
        /// Days kept, per project.
        policy: RetentionPolicy,
        /// The day the purge counts back from.
        today: Day,
    },
}

/// What a committed [`Op`] did.
pub(super) enum Done {
    /// An ingest's counts.
    Ingest(IngestOutcome),
    /// A delete.
    Delete,
    /// A purge's counts.
    Purge(PurgeOutcome),
}

/// An [`Op`] and where to send its answer once committed (or failed).
pub(super) struct Job {
    /// The write.
    pub(super) op: Op,
    /// Answered only after the transaction holding the write committed.
    pub(super) reply: Reply,
}

/// Where a job's answer goes.
pub(super) type Reply = oneshot::Sender<Result<Done, StoreError>>;

/// What travels on the queue.
pub(super) enum Msg {
    /// A write. Boxed: a job is much larger than the shutdown signal, and
    /// the channel's slots are sized for the largest message.
    Job(Box<Job>),
    /// Finish the queued writes, then stop and say so.
    Shutdown(oneshot::Sender<()>),
}

/// Queues `op` and waits for its answer. Client writes (`wait_for_room` false)
/// fail fast with [`StoreError::QueueFull`] so ingest can answer 503; purges
/// wait for room.
async fn submit(jobs: &mpsc::Sender<Msg>, op: Op, wait_for_room: bool) -> Result<Done, StoreError> {
    let (reply, answer) = oneshot::channel();
    let msg = Msg::Job(Box::new(Job { op, reply }));
    if wait_for_room {
        jobs.send(msg).await.map_err(|_| StoreError::Closed)?;
    } else {
        jobs.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
    }
    answer.await.map_err(|_| StoreError::Closed)?
}

fn wrong_answer<T>() -> Result<T, StoreError> {
    Err(StoreError::Database("writer answered the wrong job".into()))
}

/// [`super::Store::ingest_checked`] through the queue.
pub(super) fn ingest(
    jobs: &mpsc::Sender<Msg>,
    batch: IngestBatch,
    skew: Skew,
) -> StoreFuture<'_, IngestOutcome> {
    Box::pin(async move {
        match submit(jobs, Op::Ingest(batch, skew), false).await? {
            Done::Ingest(outcome) => Ok(outcome),
            _ => wrong_answer(),
        }
    })
}

/// [`super::Store::delete_install`] through the queue.
pub(super) fn delete<'a>(
    jobs: &'a mpsc::Sender<Msg>,
    project: &str,
    install: InstallHash,
) -> StoreFuture<'a, ()> {
    let op = Op::Delete {
        project: project.to_owned(),
        install,
    };
    Box::pin(async move { submit(jobs, op, false).await.map(|_| ()) })
}

/// [`super::Store::purge`] through the queue.
pub(super) fn purge<'a>(
    jobs: &'a mpsc::Sender<Msg>,
    policy: &RetentionPolicy,
    today: Day,
) -> StoreFuture<'a, PurgeOutcome> {
    let op = Op::Purge {
        policy: policy.clone(),
        today,
    };
    Box::pin(async move {
        match submit(jobs, op, true).await? {
            Done::Purge(outcome) => Ok(outcome),
            _ => wrong_answer(),
        }
    })
}
