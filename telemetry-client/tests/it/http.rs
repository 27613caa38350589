//! Real HTTP against a fake collector on 127.0.0.1:0: delivery exactly once,
//! idempotent ids on retry, what each tier carries, and the opt-out requests.

use std::collections::BTreeMap;
use std::time::Duration;

use telemetry_client::Tier;
use telemetry_protocol::PropValue;

use crate::support::{Collector, Home, MANIFEST, Mode};

const FLUSH: Duration = Duration::from_secs(20);

#[test]
fn anonymous_events_arrive_exactly_once_with_their_ids() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    for _ in 0..5 {
        t.track("command", [("name", "greet".into())]);
    }
    drop(t);
    let t = home.telemetry(MANIFEST, &collector.url);
    let control = t.control().unwrap();
    let install_id = control.status().unwrap().install_id.expect("an install id");
    let report = control.flush(FLUSH).unwrap();
    assert_eq!(report.delivered_items, 7, "{report:?}");
    assert_eq!(collector.unique_events("command"), 5);
    assert_eq!(collector.unique_events("install"), 1);
    assert_eq!(collector.unique_events("active"), 1);
    assert!(collector.event_ids().values().all(|n| *n == 1));
    collector.seen(|s| {
        for p in &s.ingests {
            assert_eq!(p.tier, Tier::Anonymous);
            assert_eq!(p.install_id, Some(install_id));
            assert!(p.counters.is_none() && p.report_id.is_none() && p.identity.is_none());
            assert_eq!(p.context.tool_version, "2.0.1");
        }
    });
    let before = collector.requests();
    control.flush(FLUSH).unwrap();
    assert_eq!(
        collector.requests(),
        before,
        "nothing pending, nothing sent"
    );
    assert_eq!(control.status().unwrap().pending, 0);
}

#[test]
fn a_lost_acknowledgement_is_retried_with_the_same_ids() {
    let collector = Collector::start(Mode::LoseAck);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    t.track("command", [("name", "init".into())]);
    t.persist();
    let control = t.control().unwrap();
    assert!(control.flush(FLUSH).is_err());
    collector.set_mode(Mode::Ok);
    control.flush(FLUSH).unwrap();
    let ids = collector.event_ids();
    assert_eq!(ids.len(), 3, "install, active, command: {ids:?}");
    assert!(
        ids.values().all(|n| *n == 2),
        "each id sent twice, never renamed: {ids:?}"
    );
}

#[test]
fn aggregate_sends_daily_counts_with_a_stable_report_id_and_no_install_id() {
    let collector = Collector::start(Mode::LoseAck);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Aggregate);
    let t = home.telemetry(MANIFEST, &collector.url);
    for _ in 0..3 {
        t.track("command", [("name", "greet".into())]);
    }
    t.persist();
    let control = t.control().unwrap();
    assert_eq!(control.status().unwrap().install_id, None);
    assert!(control.flush(FLUSH).is_err());
    collector.set_mode(Mode::Ok);
    control.flush(FLUSH).unwrap();
    collector.seen(|s| {
        assert_eq!(s.ingests.len(), 2);
        let (first, second) = (&s.ingests[0], &s.ingests[1]);
        assert_eq!(first, second, "the retry is byte-for-byte the same payload");
        assert!(first.report_id.is_some());
        assert!(first.install_id.is_none() && first.events.is_none() && first.identity.is_none());
        let counts: BTreeMap<(String, Option<PropValue>), u64> = first
            .counters
            .iter()
            .flatten()
            .map(|c| ((c.event.clone(), c.props.get("name").cloned()), c.count))
            .collect();
        assert_eq!(counts[&("command".into(), Some("greet".into()))], 3);
        assert_eq!(counts[&("install".into(), None)], 1);
        assert_eq!(counts[&("active".into(), None)], 1);
    });
}

#[test]
fn full_carries_identity_and_moving_down_to_anonymous_forgets_it_everywhere() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    let t = home.telemetry(MANIFEST, &collector.url);
    let control = t.control().unwrap();
    let identity = BTreeMap::from([("email".to_owned(), "me@example.org".to_owned())]);
    control.set_level(Tier::Full, identity.clone()).unwrap();
    drop(t);

    let t = home.telemetry(MANIFEST, &collector.url);
    t.track("command", [("name", "greet".into())]);
    t.persist();
    let control = t.control().unwrap();
    let old_id = control.status().unwrap().install_id.unwrap();
    control.flush(FLUSH).unwrap();
    collector.seen(|s| {
        assert!(
            s.ingests
                .iter()
                .all(|p| p.tier == Tier::Full && p.identity.as_ref() == Some(&identity))
        );
    });

    control.set_level(Tier::Anonymous, BTreeMap::new()).unwrap();
    let new_id = control.status().unwrap().install_id.unwrap();
    assert_ne!(new_id, old_id);
    control.flush(FLUSH).unwrap();
    collector.seen(|s| {
        assert_eq!(s.deletes.len(), 1);
        assert_eq!(s.deletes[0].install_id, old_id);
    });
    drop(t);

    let t = home.telemetry(MANIFEST, &collector.url);
    t.track("command", [("name", "init".into())]);
    t.persist();
    t.control().unwrap().flush(FLUSH).unwrap();
    collector.seen(|s| {
        let last = s.ingests.last().unwrap();
        assert_eq!(last.tier, Tier::Anonymous);
        assert_eq!(last.install_id, Some(new_id));
        assert!(last.identity.is_none());
    });
    // `install` stays once per install across the id change.
    assert_eq!(collector.unique_events("install"), 1);
}

#[test]
fn disabling_queues_a_deletion_that_survives_restarts_until_acknowledged() {
    let collector = Collector::start(Mode::Status(500));
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    t.track("command", [("name", "greet".into())]);
    let control = t.control().unwrap();
    let id = control.status().unwrap().install_id.unwrap();
    control.set_level(Tier::Off, BTreeMap::new()).unwrap();
    let status = control.status().unwrap();
    assert_eq!((status.level, status.install_id), (Tier::Off, None));
    assert!(control.flush(FLUSH).is_err());
    drop(t);

    // A new process: the deletion is still queued, and nothing else is.
    let t = home.telemetry(MANIFEST, &collector.url);
    let control = t.control().unwrap();
    let pending = control.pending_payloads().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].path, "/v1/delete");
    assert_eq!(pending[0].body["install_id"], id.to_string());
    collector.set_mode(Mode::Ok);
    let report = control.flush(FLUSH).unwrap();
    assert_eq!(report.deletions, 1);
    collector.seen(|s| {
        assert!(
            s.ingests.is_empty(),
            "nothing recorded after opting out was sent"
        );
        assert_eq!(s.deletes.len(), 1);
    });
    assert!(control.pending_payloads().unwrap().is_empty());
    let log = control.upload_log().unwrap();
    assert!(
        log.iter()
            .any(|e| e.kind == telemetry_client::UploadKind::Delete
                && e.result == telemetry_client::UploadResult::Delivered)
    );
}

#[test]
fn pending_payloads_are_exactly_what_is_sent_next() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    t.track("command", [("name", "greet".into())]);
    t.track("command", [("name", "init".into())]);
    t.persist();
    let control = t.control().unwrap();
    let shown: Vec<serde_json::Value> = control
        .pending_payloads()
        .unwrap()
        .into_iter()
        .map(|p| p.body)
        .collect();
    control.flush(FLUSH).unwrap();
    let sent: Vec<serde_json::Value> = collector.seen(|s| {
        s.ingests
            .iter()
            .map(|p| serde_json::to_value(p).unwrap())
            .collect()
    });
    assert_eq!(shown, sent);
}

#[test]
fn identity_is_checked_against_the_manifest() {
    let home = Home::new();
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    let control = t.control().unwrap();
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    assert!(matches!(
        control.set_level(Tier::Full, one("phone", "1")),
        Err(telemetry_client::Error::UnknownIdentityField(_))
    ));
    assert!(matches!(
        control.set_level(Tier::Full, one("email", &"x".repeat(33))),
        Err(telemetry_client::Error::IdentityTooLong { max_len: 32, .. })
    ));
    assert!(matches!(
        control.set_level(Tier::Anonymous, one("email", "a@b")),
        Err(telemetry_client::Error::IdentityNeedsFull)
    ));
    // Nothing was stored by the refused calls.
    assert_eq!(control.status().unwrap().choice, None);
}

#[test]
fn flush_works_inside_a_host_async_runtime() {
    // A blocking HTTP client panics when created or dropped on a runtime
    // thread; hosts with `#[tokio::main]` must still be able to flush.
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = home.telemetry(MANIFEST, &collector.url);
        t.track("command", [("name", "greet".into())]);
        t.persist();
        t.control().unwrap().flush(FLUSH).unwrap();
    });
    assert_eq!(collector.unique_events("command"), 1);
}
