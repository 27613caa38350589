//! Consent comes first: without it nothing reaches the collector, and
//! `DO_NOT_TRACK=1` wins over a stored `full`.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e_tests::{Collector, User, event_count, wait_for};

/// A loopback listener that counts every connection made to it.
fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream;
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .ok();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
        }
    });
    (url, count)
}

#[test]
fn without_consent_and_without_a_terminal_nothing_is_sent() {
    let (url, connections) = counting_listener();
    let user = User::new(url);
    user.run(&["init", "--default-name", "Ada"]);
    for _ in 0..5 {
        user.run(&["greet"]);
    }
    let status = user.status();
    assert_eq!(status["level"], "off");
    assert_eq!(status["pending"], 0);
    // Give any (wrongly) started uploader ample time to connect before counting.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no request may reach the collector"
    );
    let spooled: Vec<_> = user
        .files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("spool"))
        .collect();
    assert!(
        spooled.is_empty(),
        "nothing is recorded without consent: {spooled:?}"
    );
}

#[test]
fn do_not_track_wins_over_a_stored_full() {
    let collector = Collector::start();
    let user = User::new(collector.url());
    user.enable("full", "a@example.org");
    let out = user
        .demo(&["telemetry", "status", "--json"])
        .env("DO_NOT_TRACK", "1")
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["level"], "off");
    assert_eq!(status["source"], "environment");
    assert_eq!(status["install_id"], serde_json::Value::Null);

    for _ in 0..3 {
        let out = user
            .demo(&["greet"])
            .env("DO_NOT_TRACK", "1")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let out = user
        .demo(&["telemetry", "flush"])
        .env("DO_NOT_TRACK", "1")
        .output()
        .unwrap();
    assert!(out.status.success() || out.status.code() == Some(1));
    // Without DNT the stored `full` applies again; flushing now would send
    // anything recorded under DNT. There must be nothing.
    user.run(&["telemetry", "flush"]);
    let stats = wait_for("stats", || Some(collector.stats()));
    assert_eq!(
        event_count(&stats, "command"),
        0,
        "nothing recorded under DO_NOT_TRACK: {stats:#}"
    );
}
