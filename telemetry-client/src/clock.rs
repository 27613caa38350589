//! The client's notion of "now", injectable so tests can cross a UTC day or an
//! ISO week without waiting for one.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use telemetry_protocol::Timestamp;

/// The last millisecond of the year 9999, the latest time the client writes:
/// the text form of a time has four-digit years, and a later one would make
/// the file that holds it unreadable.
pub(crate) const MAX_MILLIS: i64 = 253_402_300_799_999;

/// `t` moved into the years 1970 to 9999, the range every time the client
/// writes stays within, whatever a clock or a server says.
pub(crate) fn bounded(t: Timestamp) -> Timestamp {
    Timestamp::from_unix_millis(t.unix_millis().clamp(0, MAX_MILLIS))
}

/// A source of the current time.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))] // Re-exported by `testing`.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current moment in UTC.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))] // Re-exported by `testing`.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        bounded(Timestamp::from_unix_millis(millis))
    }
}

/// A clock that only moves when told to, for tests of day and week rollover.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: std::sync::atomic::AtomicI64,
}

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock {
            millis: std::sync::atomic::AtomicI64::new(at.unix_millis()),
        }
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.millis
            .store(at.unix_millis(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock forward by `millis`.
    pub fn advance_millis(&self, millis: i64) {
        self.millis
            .fetch_add(millis, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        bounded(Timestamp::from_unix_millis(
            self.millis.load(std::sync::atomic::Ordering::SeqCst),
        ))
    }
}
