//! The client's debug-level log lines: the failures that recording swallows
//! (a spool that cannot be written, an uploader that cannot start), which a
//! host sees only if it installs a `tracing` subscriber.
//!
//! Every line goes through [`debug!`], so that a host can compile them all
//! out: without the `debug-log` feature the macro keeps the `tracing` call in
//! a branch that is never taken, so the arguments still type-check and count
//! as used, and the optimiser removes the branch with each call site's
//! metadata, about 50 KiB of a host binary. Nothing else changes: without a
//! subscriber the lines go nowhere either way.

/// `tracing::debug!`, or nothing without the `debug-log` feature.
#[cfg(feature = "debug-log")]
macro_rules! debug {
    ($($arg:tt)*) => { ::tracing::debug!($($arg)*) };
}

/// `tracing::debug!`, or nothing without the `debug-log` feature.
#[cfg(not(feature = "debug-log"))]
macro_rules! debug {
    ($($arg:tt)*) => {
        if false {
            ::tracing::debug!($($arg)*)
        }
    };
}

pub(crate) use debug;
