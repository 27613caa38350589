//! Failure modes of the collector: blackholed, refused, 500, 429, 4xx, and an
//! endpoint that is not allowed. Data must stay queued (or, for a 4xx, be
//! dropped with a logged reason), and the host must never wait.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use telemetry_client::UploadResult;
use telemetry_client::testing::for_own_tests_only as internal;
use telemetry_client::{Error, Tier};
use telemetry_protocol::Timestamp;

use crate::support::{Collector, Home, MANIFEST, Mode, PROBE_MANIFEST, wait_until};

fn now() -> Timestamp {
    use telemetry_client::testing::Clock;
    telemetry_client::testing::SystemClock.now()
}

/// A listener that accepts connections and never answers; counts them.
fn blackhole() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
            // Read nothing back; keep the socket open so the client waits.
            let _ = held.last_mut().map(|s| s.read(&mut [0u8; 0]));
        }
    });
    (url, accepted)
}

fn recorded(home: &Home, endpoint: &str) -> telemetry_client::Telemetry {
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, endpoint);
    t.track("command", [("name", "greet".into())]);
    t.persist();
    t
}

#[test]
fn a_blackholed_collector_times_out_and_keeps_the_data() {
    let (url, accepted) = blackhole();
    let home = Home::new();
    let t = recorded(&home, &url);
    let control = t.control().unwrap();
    let pending = control.status().unwrap().pending;
    assert_eq!(pending, 3);
    let err = control.flush(Duration::from_millis(800)).unwrap_err();
    assert!(
        matches!(err, Error::Timeout(_) | Error::Unreachable(_)),
        "{err}"
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the request did reach the blackhole"
    );
    assert_eq!(control.status().unwrap().pending, pending);
}

#[test]
fn hosts_never_wait_on_a_blackholed_collector_and_start_one_uploader() {
    let (url, accepted) = blackhole();
    let home = Home::new();
    home.consent(PROBE_MANIFEST, Tier::Anonymous);
    for _ in 0..20 {
        let out = home
            .command()
            .args(["track", "1"])
            .env("PROBE_CLI_TELEMETRY_ENDPOINT", &url)
            .env("PROBE_INTERVAL_MS", "600000")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until("the uploader to connect", Duration::from_secs(30), || {
        accepted.load(Ordering::SeqCst) >= 1
    });
    // Twenty quick runs within one interval: one uploader, one connection.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let paths = home.folders().tool_state("probe-cli");
    let locked = std::fs::File::open(paths.uploader_lock()).unwrap();
    assert!(
        locked.try_lock().is_err(),
        "the one uploader is still waiting"
    );
}

/// Issue 17: an uploader that cannot reach the collector gives up within
/// 5 s in all, so fewer stray processes show in `ps`. Before, it waited out
/// its 10 s request timeout on a blackholed collector.
#[test]
fn an_uploader_facing_a_blackhole_gives_up_within_its_budget() {
    let (url, accepted) = blackhole();
    let home = Home::new();
    home.consent(PROBE_MANIFEST, Tier::Anonymous);
    let out = home
        .command()
        .args(["track", "1"])
        .env("PROBE_CLI_TELEMETRY_ENDPOINT", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let exited = std::time::Instant::now();
    wait_until("the uploader to connect", Duration::from_secs(30), || {
        accepted.load(Ordering::SeqCst) >= 1
    });
    let lock = home.folders().tool_state("probe-cli").uploader_lock();
    // The lock is free once the uploader has exited; 9 s leaves room for a
    // loaded machine while staying under the old 10 s request timeout.
    wait_until("the uploader to give up", Duration::from_secs(9), || {
        std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_ok())
    });
    assert!(exited.elapsed() < Duration::from_secs(9));
    // What it could not send is still there for a later uploader.
    let t = home.telemetry(PROBE_MANIFEST, &url);
    assert!(t.control().unwrap().status().unwrap().pending > 0);
}

/// The nice value of the live process whose environment holds `marker`, from
/// `/proc/<pid>/stat` (field 19, counted after the command name's `)`).
#[cfg(target_os = "linux")]
fn nice_of_process_with(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let dir = entry.path();
            let environ = std::fs::read(dir.join("environ")).ok()?;
            environ
                .split(|&b| b == 0)
                .any(|var| var == marker.as_bytes())
                .then_some(())?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name.split_whitespace().nth(16)?.parse().ok()
        })
}

/// An uploader still sending when the user's next command starts must not
/// take a core from it: it runs at the lowest CPU priority.
#[cfg(target_os = "linux")]
#[test]
fn the_uploader_runs_at_the_lowest_priority() {
    let (url, accepted) = blackhole();
    let home = Home::new();
    home.consent(PROBE_MANIFEST, Tier::Anonymous);
    let marker = format!("PROBE_TEST_MARKER={}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let out = home
        .command()
        .args(["track", "1"])
        .env("PROBE_CLI_TELEMETRY_ENDPOINT", &url)
        .env(key, value)
        .output()
        .unwrap();
    assert!(out.status.success());
    // The blackhole holds the uploader's request, so it is alive to look at.
    wait_until("the uploader to connect", Duration::from_secs(30), || {
        accepted.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(nice_of_process_with(&marker), Some(19));
}

#[test]
fn a_refused_connection_backs_off_and_keeps_the_data() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = Home::new();
    let t = recorded(&home, &format!("http://127.0.0.1:{port}"));
    let control = t.control().unwrap();
    let before = now();
    let err = control.flush(Duration::from_secs(20)).unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err}");
    assert_eq!(control.status().unwrap().pending, 3);
    let log = control.upload_log().unwrap();
    assert_eq!(log.last().unwrap().result, UploadResult::Failed);
    let state = internal::state(&home.folders().tool_state("it-cli"));
    assert_eq!(state.failures, 1);
    assert!(state.next_attempt.unwrap() >= before);
}

#[test]
fn a_500_keeps_the_data_for_a_later_attempt() {
    let collector = Collector::start(Mode::Status(500));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    let err = control.flush(Duration::from_secs(20)).unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(collector.requests(), 1, "stops at the first failure");
    collector.set_mode(Mode::Ok);
    control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(collector.unique_events("command"), 1);
    let state = internal::state(&home.folders().tool_state("it-cli"));
    assert_eq!(state.failures, 0);
}

#[test]
fn a_429_honours_retry_after() {
    let collector = Collector::start(Mode::RetryAfter(600));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    let before = now();
    assert!(control.flush(Duration::from_secs(20)).is_err());
    let state = internal::state(&home.folders().tool_state("it-cli"));
    let wait = state.next_attempt.unwrap().unix_millis() - before.unix_millis();
    assert!(wait >= 600_000, "next attempt only {wait} ms later");
    assert_eq!(
        control.upload_log().unwrap().last().unwrap().result,
        UploadResult::Deferred
    );
    assert_eq!(control.status().unwrap().pending, 3);
}

#[test]
fn a_4xx_drops_the_payload_and_logs_why() {
    let collector = Collector::start(Mode::Status(422));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    let report = control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(report.rejected, 1);
    assert_eq!(control.status().unwrap().pending, 0);
    let last = control.upload_log().unwrap().pop().unwrap();
    assert_eq!(last.result, UploadResult::Rejected);
    assert!(
        last.detail.contains("422") && last.detail.contains("policy_violation"),
        "{}",
        last.detail
    );
}

/// Case 5 of issue 13: any 4xx but 429 dropped a deletion request (and data)
/// for good, though a 403 from a firewall or a 404 from a misrouted proxy
/// says nothing about the request. Only 2xx, 400 and 422 end one now.
#[test]
fn only_a_final_answer_ends_a_request() {
    for status in [401, 403, 404, 405, 408, 409, 500, 502, 503, 429, 400, 422] {
        let collector = Collector::start(Mode::Status(status));
        let home = Home::new();
        let t = recorded(&home, &collector.url);
        let control = t.control().unwrap();
        let paths = home.folders().tool_state("it-cli");
        let result = control.flush(Duration::from_secs(20));
        let final_answer = matches!(status, 400 | 422);
        let state = internal::state(&paths);
        if final_answer {
            assert_eq!(result.unwrap().rejected, 1, "{status}");
            assert_eq!(control.status().unwrap().pending, 0, "{status}");
            assert_eq!(state.dropped.get("refused_payload"), Some(&3), "{status}");
        } else {
            assert!(result.is_err(), "{status}");
            assert_eq!(
                control.status().unwrap().pending,
                3,
                "{status} keeps the data"
            );
            assert!(state.dropped.is_empty(), "{status}");
            assert!(
                state.failures > 0 && state.next_attempt.is_some(),
                "{status} backs off"
            );
        }
        // The same for a deletion request.
        control.set_level(Tier::Off, Default::default()).unwrap();
        let result = control.flush(Duration::from_secs(20));
        let state = internal::state(&paths);
        assert_eq!(result.is_ok(), final_answer, "{status}");
        assert_eq!(
            state.pending_deletions.len(),
            usize::from(!final_answer),
            "{status}: deletion kept unless the answer was final"
        );
    }
}

/// Case 7 of issue 13: a payload over the collector's body limit got 413 and
/// was dropped. It is now split in half until the halves fit.
#[test]
fn a_413_splits_the_payload_and_nothing_is_dropped() {
    let collector = Collector::start(Mode::LimitBytes(2_000));
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    for _ in 0..60 {
        t.track("command", [("name", "greet".into())]);
    }
    t.persist();
    let control = t.control().unwrap();
    control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(collector.unique_events("command"), 60);
    assert!(collector.seen(|s| s.ingest_bytes.iter().all(|b| *b <= 2_000)));
    assert_eq!(control.status().unwrap().pending, 0);
    assert!(
        internal::state(&home.folders().tool_state("it-cli"))
            .dropped
            .is_empty()
    );
}

/// Payloads are also split by size when packaged, each under 64 KiB.
#[test]
fn payloads_stay_under_64_kib() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    for _ in 0..1_000 {
        t.track("command", [("name", "greet".into())]);
    }
    t.persist();
    t.control().unwrap().flush(Duration::from_secs(20)).unwrap();
    assert_eq!(collector.unique_events("command"), 1_000);
    let sizes = collector.seen(|s| s.ingest_bytes.clone());
    assert!(sizes.len() > 1, "{sizes:?}");
    assert!(sizes.iter().all(|b| *b <= 64 * 1024), "{sizes:?}");
}

/// A 2xx is delivered even when some items were refused; those are counted.
#[test]
fn refused_items_of_a_delivered_payload_are_counted() {
    let collector = Collector::start(Mode::OkRefused(2));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    let report = control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(report.delivered_payloads, 1);
    assert_eq!(control.status().unwrap().pending, 0);
    let state = internal::state(&home.folders().tool_state("it-cli"));
    assert_eq!(state.dropped.get("refused_items"), Some(&2));
    let last = control.upload_log().unwrap().pop().unwrap();
    assert_eq!(last.result, UploadResult::Delivered);
    assert!(last.detail.contains("refused 2"), "{}", last.detail);
}

/// Case 6 of issue 13: a 503 with `Retry-After: 1000000000000` wrote
/// `next_attempt` in the year 33715; the state file then failed to parse, a
/// new install id started and `install` was counted twice.
#[test]
fn a_huge_retry_after_is_capped_and_the_state_survives() {
    let collector = Collector::start(Mode::Unavailable(1_000_000_000_000));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    let before = now();
    assert!(control.flush(Duration::from_secs(20)).is_err());
    let paths = home.folders().tool_state("it-cli");
    let text = std::fs::read_to_string(paths.state_file()).unwrap();
    let state = internal::parse_state(&text).expect("the state file parses");
    let wait = state.next_attempt.unwrap().unix_millis() - before.unix_millis();
    assert!(
        wait <= 24 * 3600 * 1000 + 60_000,
        "next attempt {wait} ms later"
    );
    let id = state.install_id;
    assert!(id.is_some());
    drop(t);
    // The next run keeps the id and records no second `install`.
    collector.set_mode(Mode::Ok);
    let t = home.telemetry(MANIFEST, &collector.url);
    t.control().unwrap().flush(Duration::from_secs(20)).unwrap();
    assert_eq!(internal::state(&paths).install_id, id);
    assert_eq!(collector.unique_events("install"), 1);
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let home = Home::new();
    let t = recorded(&home, "http://192.0.2.1:80");
    let err = t
        .control()
        .unwrap()
        .flush(Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(err, Error::Endpoint(_)), "{err}");
    assert_eq!(t.control().unwrap().status().unwrap().pending, 3);
}

/// Case 8 of issue 13: the outbox had no bound, so a long outage at
/// `anonymous` grew it without limit. It is now bounded in bytes and age,
/// like the spool; the oldest go first, and what goes is counted.
#[test]
fn the_outbox_is_bounded_in_bytes_and_age_and_counts_what_it_drops() {
    use telemetry_client::OutboxLimits;
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let clock = Arc::new(telemetry_client::testing::ManualClock::new(now()));
    // How a host builds limits: struct literals do not compile outside the
    // crate (`#[non_exhaustive]`), so a bound added later keeps its default.
    let limits = OutboxLimits::default()
        .with_max_bytes(2_000)
        .with_max_age(Duration::from_secs(30 * 24 * 3600));
    let build = || {
        telemetry_client::Telemetry::builder(MANIFEST)
            .tool_version("2.0.1")
            .folders(home.folders())
            // Nothing listens there: every flush fails and packages more.
            .endpoint("http://127.0.0.1:9")
            .system_policy(None)
            .interactive(false)
            .detached_upload(false)
            .clock(clock.clone())
            .outbox_limits(limits)
            .build()
    };
    let paths = home.folders().tool_state("it-cli");
    let outbox_bytes = || -> u64 {
        std::fs::read_dir(paths.outbox())
            .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
            .unwrap_or(0)
    };
    let mut recorded = 0;
    for _ in 0..10 {
        let t = build();
        for _ in 0..5 {
            t.track("command", [("name", "greet".into())]);
        }
        recorded += 5;
        t.persist();
        assert!(t.control().unwrap().flush(Duration::from_secs(5)).is_err());
        assert!(outbox_bytes() <= 2_000, "{}", outbox_bytes());
        clock.advance_millis(1_000);
    }
    let state = internal::state(&paths);
    let full = state.dropped.get("outbox_full").copied().unwrap_or(0);
    assert!(full > 0, "{:?}", state.dropped);
    // What is left plus what was counted is everything recorded (the
    // lifecycle events of the first run included).
    let t = build();
    let pending = t.control().unwrap().status().unwrap().pending;
    assert_eq!(pending + full, recorded + 2);

    // A month later, whatever waits is dropped as expired.
    clock.advance_millis(31 * 24 * 3600 * 1000);
    // Nothing is left to send, so this may even succeed.
    let _ = t.control().unwrap().flush(Duration::from_secs(5));
    assert_eq!(t.control().unwrap().status().unwrap().pending, 0);
    let state = internal::state(&paths);
    assert_eq!(state.dropped.get("outbox_expired").copied(), Some(pending));
}

/// Delivery health: what the client had to drop goes to the collector, on
/// the next upload, as aggregate `telemetry_dropped` counters in a payload
/// of its own, without an install id; the counts leave only after a 2xx.
#[test]
fn drops_are_reported_once_as_aggregate_counters_of_telemetry_dropped() {
    let collector = Collector::start(Mode::Status(422));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    control.flush(Duration::from_secs(20)).unwrap();
    let paths = home.folders().tool_state("it-cli");
    assert_eq!(
        internal::state(&paths).dropped.get("refused_payload"),
        Some(&3)
    );

    // Refused or unreachable: the counts stay.
    collector.set_mode(Mode::Status(503));
    assert!(control.flush(Duration::from_secs(20)).is_err());
    assert_eq!(
        internal::state(&paths).dropped.get("refused_payload"),
        Some(&3)
    );

    collector.set_mode(Mode::Ok);
    control.flush(Duration::from_secs(20)).unwrap();
    let health: Vec<_> = collector.seen(|s| {
        s.ingests
            .iter()
            .filter(|p| {
                p.counters
                    .iter()
                    .flatten()
                    .any(|c| c.event == "telemetry_dropped")
            })
            .cloned()
            .collect()
    });
    assert_eq!(health.len(), 1, "{health:?}");
    let p = &health[0];
    assert_eq!(p.tier, Tier::Aggregate);
    assert!(p.install_id.is_none() && p.events.is_none() && p.report_id.is_some());
    let counters = p.counters.as_ref().unwrap();
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0].count, 3);
    assert_eq!(
        counters[0].props.get("reason"),
        Some(&telemetry_protocol::PropValue::Token(
            "refused_payload".into()
        ))
    );
    let state = internal::state(&paths);
    assert!(
        state.dropped.is_empty() && !state.health_report,
        "{state:?}"
    );
    // Sent once.
    control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(
        collector.seen(|s| s.ingests.len()),
        1,
        "nothing more to send"
    );
}

/// A collector that refuses the health payload itself does not cause a loop.
#[test]
fn a_refused_health_report_is_dropped_without_being_counted_again() {
    let collector = Collector::start(Mode::Status(400));
    let home = Home::new();
    let t = recorded(&home, &collector.url);
    let control = t.control().unwrap();
    control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(
        internal::state(&home.folders().tool_state("it-cli"))
            .dropped
            .get("refused_payload"),
        Some(&3)
    );
    control.flush(Duration::from_secs(20)).unwrap();
    let state = internal::state(&home.folders().tool_state("it-cli"));
    assert!(
        state.dropped.is_empty() && !state.health_report,
        "{state:?}"
    );
    control.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(collector.requests(), 2, "the payload, then the report once");
}
