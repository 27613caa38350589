//! The machine-wide API: listing tools, setting another tool's level (with
//! its deletion queued for that tool's next run) and the global ceiling.

use telemetry_client::testing::for_own_tests_only::{self as internal, Machine};
use telemetry_client::{Source, Tier};

use crate::support::{Collector, Home, MANIFEST, Mode, PROBE_MANIFEST};

#[test]
fn lists_every_tool_with_its_level_and_source() {
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    home.consent(PROBE_MANIFEST, Tier::Aggregate);
    let machine = Machine::with_folders(home.folders()).system_policy(None);
    let tools = machine.list_tools().unwrap();
    let names: Vec<(&str, Tier, Source)> = tools
        .iter()
        .map(|t| (t.tool.as_str(), t.level, t.source))
        .collect();
    assert_eq!(
        names,
        [
            ("it-cli", Tier::Anonymous, Source::ToolFile),
            ("probe-cli", Tier::Aggregate, Source::ToolFile)
        ]
    );
    assert_eq!(machine.folders(), &home.folders());
}

#[test]
fn the_global_ceiling_lowers_every_tool_until_lifted() {
    let home = Home::new();
    home.consent(MANIFEST, Tier::Full);
    let machine = Machine::with_folders(home.folders()).system_policy(None);
    machine.set_global_ceiling(Some(Tier::Off)).unwrap();
    assert_eq!(machine.global_ceiling().unwrap(), Some(Tier::Off));
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    assert_eq!(t.level(), Tier::Off);
    let status = t.control().unwrap().status().unwrap();
    assert_eq!(
        (status.level, status.source),
        (Tier::Off, Source::GlobalFile)
    );
    assert_eq!(status.install_id, None);
    drop(t);
    machine.set_global_ceiling(None).unwrap();
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    assert_eq!(
        t.level(),
        Tier::Full,
        "a ceiling deletes nothing; lifting it restores the choice"
    );
}

#[test]
fn disabling_another_tool_queues_its_deletion_for_its_next_run() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    let id = t.control().unwrap().status().unwrap().install_id.unwrap();
    drop(t);

    let machine = Machine::with_folders(home.folders()).system_policy(None);
    assert_eq!(machine.disable_all().unwrap(), ["it-cli"]);
    let listed = &machine.list_tools().unwrap()[0];
    assert_eq!((listed.level, listed.pending_deletions), (Tier::Off, 1));

    let t = home.telemetry(MANIFEST, &collector.url);
    let control = t.control().unwrap();
    assert_eq!(control.status().unwrap().install_id, None);
    control.flush(std::time::Duration::from_secs(20)).unwrap();
    collector.seen(|s| {
        assert_eq!(s.deletes.len(), 1);
        assert_eq!(s.deletes[0].install_id, id);
        assert!(s.ingests.is_empty());
    });
}

/// `telemetry-consent disable --all` used to skip a tool whose uploader was
/// running; that uploader may have read the queue before the opt-out and
/// stops at its first failed request, so the deletion was never sent by a
/// user who then uninstalled (seen in the fleet drill). It now waits.
#[test]
fn delivering_deletions_waits_for_a_running_uploader() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, &collector.url);
    let id = t.control().unwrap().status().unwrap().install_id.unwrap();
    drop(t);
    let machine = Machine::with_folders(home.folders()).system_policy(None);
    machine.disable_all().unwrap();
    // `home.consent` stored a placeholder endpoint; point it at ours, as a
    // tool that queued a deletion stores its own.
    let state_path = home.folders().tool_state("it-cli").dir.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["endpoint"] = collector.url.clone().into();
    std::fs::write(&state_path, state.to_string()).unwrap();

    // Another process's uploader holds the lock for a moment.
    let lock_path = home.folders().tool_state("it-cli").uploader_lock();
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(400));
        drop(lock);
    });
    let delivered = machine
        .deliver_deletions(std::time::Duration::from_secs(10))
        .unwrap();
    holder.join().unwrap();
    assert_eq!(delivered, 1);
    collector.seen(|s| {
        assert_eq!(s.deletes.len(), 1);
        assert_eq!(s.deletes[0].install_id, id);
    });
}

#[test]
fn reset_id_queues_deletion_of_the_old_id() {
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    let control = t.control().unwrap();
    let old = control.status().unwrap().install_id.unwrap();
    let new = control.reset_id().unwrap();
    assert_ne!(old, new);
    assert_eq!(control.status().unwrap().install_id, Some(new));
    let pending = control.pending_payloads().unwrap();
    assert!(
        pending
            .iter()
            .any(|p| p.path == "/v1/delete" && p.body["install_id"] == old.to_string())
    );
    // Events recorded after the reset carry the new id.
    t.track("command", [("name", "greet".into())]);
    t.persist();
    let pending = control.pending_payloads().unwrap();
    assert!(
        pending
            .iter()
            .filter(|p| p.path == "/v1/ingest")
            .all(|p| p.body["install_id"] == new.to_string())
    );
}

#[test]
fn a_hand_edited_downgrade_is_completed_at_the_next_start() {
    let home = Home::new();
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    let id = t.control().unwrap().status().unwrap().install_id.unwrap();
    drop(t);
    // The user edits the file instead of running `disable`.
    let file = home.folders().tool_file("it-cli");
    std::fs::write(&file, "level = \"off\"\n").unwrap();
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    let control = t.control().unwrap();
    assert_eq!(control.status().unwrap().install_id, None);
    let state = internal::state(&home.folders().tool_state("it-cli"));
    assert_eq!(state.install_id, None);
    assert_eq!(state.pending_deletions, [id]);
    // Opting in again starts a fresh, unlinkable id.
    drop(t);
    home.consent(MANIFEST, Tier::Anonymous);
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    let fresh = t.control().unwrap().status().unwrap().install_id;
    assert!(fresh.is_some() && fresh != Some(id));
}
