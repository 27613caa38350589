//! The overhead harness with real processes and real loopback endpoints.

use std::time::Duration;

use loadgen::endpoint::EndpointMode;
use loadgen::overhead::{CommandSpec, OverheadConfig, run};

fn config(a: &str, a_env: &[&str], b: &str, endpoint: EndpointMode) -> OverheadConfig {
    let env: Vec<String> = a_env.iter().map(|s| (*s).to_owned()).collect();
    OverheadConfig {
        a: CommandSpec::parse(a, &env).unwrap(),
        b: CommandSpec::parse(b, &[]).unwrap(),
        endpoint,
        runs: 6,
        warmup: 1,
        max_time: Duration::from_secs(120),
        run_timeout: Duration::from_secs(60),
        hold_limit: Duration::from_secs(60),
        linger_runs: 1,
        linger_limit: Duration::from_secs(60),
        settle: None,
    }
}

#[test]
fn pairs_are_timed_and_failures_counted() {
    let report = run(&config("false", &[], "true", EndpointMode::Refused)).unwrap();
    assert_eq!(report.pairs, 6);
    assert_eq!((report.a.n, report.b.n, report.diff.n), (6, 6, 6));
    assert_eq!((report.a_failures, report.b_failures), (6, 0));
    assert_eq!((report.a_timeouts, report.a_left_alive), (0, 0));
    assert!(!report.hit_time_limit);
    let linger = report.linger.unwrap();
    assert_eq!(linger.runs, 1);
    assert!(!linger.hit_limit);
}

#[test]
fn a_slower_command_shows_a_positive_difference() {
    let report = run(&config("sleep 0.05", &[], "true", EndpointMode::Refused)).unwrap();
    assert!(report.diff.median >= 45.0, "{report:?}");
    assert!(report.a.median > report.b.median);
}

#[test]
fn the_endpoint_url_reaches_the_command_and_the_stub_answers_it() {
    // A sends one HTTP request to the stub with bash's /dev/tcp; it fails
    // unless {endpoint} was substituted with the stub's address.
    let script = r#"u=${E#http://}; exec 3<>/dev/tcp/${u%:*}/${u#*:} && printf 'POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n' >&3 && head -c 12 <&3 | grep -q '200'"#;
    let mut cfg = config("bash -c", &["E={endpoint}"], "true", EndpointMode::Stub);
    cfg.a.args.push(script.to_owned());
    let report = run(&cfg).unwrap();
    assert_eq!(report.a_failures, 0, "{report:?}");
    // Warm-up, timed runs and the linger run each sent one request.
    assert_eq!(report.endpoint_requests, 1 + 6 + 1);
    assert!(report.endpoint_url.starts_with("http://127.0.0.1:"));
}

#[test]
fn a_run_past_its_timeout_is_killed_and_counted() {
    let mut cfg = config("sleep 30", &[], "true", EndpointMode::Blackhole);
    cfg.runs = 1;
    cfg.warmup = 0;
    cfg.linger_runs = 0;
    cfg.run_timeout = Duration::from_millis(300);
    let report = run(&cfg).unwrap();
    assert_eq!((report.a_timeouts, report.b_timeouts), (1, 0));
    assert!(report.linger.is_none());
}

#[test]
fn detached_children_are_reported_as_left_alive_and_lingering() {
    let mut cfg = config("sh -c", &[], "true", EndpointMode::BlackholeNoAccept);
    cfg.a.args.push("sleep 0.5 >/dev/null 2>&1 &".to_owned());
    cfg.runs = 2;
    let report = run(&cfg).unwrap();
    assert!(report.a_left_alive >= 1, "{report:?}");
    assert_eq!(report.b_left_alive, 0);
    let linger = report.linger.unwrap();
    assert!(linger.max_all_gone_ms >= 400.0, "{linger:?}");
    assert!(linger.max_exit_ms < linger.max_all_gone_ms);
}

#[test]
fn settling_waits_for_detached_children_between_pairs() {
    let mut cfg = config("sh -c", &[], "true", EndpointMode::BlackholeNoAccept);
    cfg.a.args.push("sleep 0.3 >/dev/null 2>&1 &".to_owned());
    cfg.runs = 2;
    cfg.linger_runs = 0;
    cfg.settle = Some(Duration::from_secs(10));
    let started = std::time::Instant::now();
    let report = run(&cfg).unwrap();
    // Without settling, the last pair's sleep is still running at the end.
    assert_eq!(report.a_left_alive, 0, "{report:?}");
    assert!(started.elapsed() >= Duration::from_millis(600));
}
