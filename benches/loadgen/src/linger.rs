//! Finds the processes a benchmark run left behind, children included.
//!
//! A CLI may hand its upload to a detached child that outlives it, and a
//! detached child leaves the parent's process group, so process groups cannot
//! find it. The environment can: the harness gives every command it starts a
//! marker variable with a value unique to the harness run, children inherit
//! it, and [`alive_with_marker`] scans `/proc/<pid>/environ` for it. That
//! works for any child that keeps its inherited environment, which re-executed
//! uploaders do. On systems without `/proc` the scan finds nothing.

use std::time::{Duration, Instant};

/// The environment variable carrying the marker.
pub const MARKER_VAR: &str = "LOADGEN_BENCH_MARKER";

/// A marker value unique to this harness run.
pub fn new_marker(label: &str) -> String {
    let random = getrandom::u64().unwrap_or_else(|_| u64::from(std::process::id()));
    format!("{label}-{}-{random:016x}", std::process::id())
}

/// The ids of live processes whose environment holds `MARKER_VAR=marker`.
/// Zombies (exited, not yet reaped) do not count: they hold no sockets.
pub fn alive_with_marker(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_VAR}={marker}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                return false;
            };
            environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) && !is_zombie(*pid)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    // The state is the field after the parenthesized command name.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Waits until no process carries `marker` or `limit` passes, polling every
/// `poll`. Returns how long it waited and the processes still alive at the end
/// (empty unless the limit passed).
pub fn wait_gone(marker: &str, limit: Duration, poll: Duration) -> (Duration, Vec<u32>) {
    let start = Instant::now();
    loop {
        let alive = alive_with_marker(marker);
        if alive.is_empty() || start.elapsed() >= limit {
            return (start.elapsed(), alive);
        }
        std::thread::sleep(poll);
    }
}

/// Kills the given processes, which the harness itself started (each carries
/// its marker), by id with SIGKILL. Used only when they outlive the limit.
pub fn kill_all(pids: &[u32]) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_detached_grandchild_is_found_and_then_seen_gone() {
        if !std::path::Path::new("/proc/self/environ").exists() {
            return;
        }
        let marker = new_marker("test");
        // The shell exits at once; its background sleep lives on, reparented.
        let status = Command::new("sh")
            .args(["-c", "sleep 1 >/dev/null 2>&1 &"])
            .env(MARKER_VAR, &marker)
            .status()
            .unwrap();
        assert!(status.success());
        // The shell can exit while its child is still exec'ing `sleep`, when
        // its environment cannot be read yet: look again for a moment.
        let start = std::time::Instant::now();
        let mut found = alive_with_marker(&marker).len();
        while found == 0 && start.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(5));
            found = alive_with_marker(&marker).len();
        }
        assert_eq!(found, 1, "the orphaned sleep");
        let (waited, left) = wait_gone(&marker, Duration::from_secs(30), Duration::from_millis(10));
        assert!(left.is_empty());
        assert!(
            waited > Duration::from_millis(500),
            "found gone too early: {waited:?}"
        );
        assert!(alive_with_marker("no-such-marker").is_empty());
    }

    #[test]
    fn processes_past_the_limit_are_reported_and_can_be_killed() {
        if !std::path::Path::new("/proc/self/environ").exists() {
            return;
        }
        let marker = new_marker("test");
        Command::new("sh")
            .args(["-c", "sleep 60 >/dev/null 2>&1 &"])
            .env(MARKER_VAR, &marker)
            .status()
            .unwrap();
        let (_, left) = wait_gone(
            &marker,
            Duration::from_millis(100),
            Duration::from_millis(10),
        );
        assert_eq!(left.len(), 1);
        kill_all(&left);
        let (_, left) = wait_gone(&marker, Duration::from_secs(30), Duration::from_millis(10));
        assert!(left.is_empty());
    }
}
