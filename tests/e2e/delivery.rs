//! Delivery: opt-out deletes at the collector, a collector that was down gets
//! every event exactly once, and concurrent processes give exact counts.

use std::process::Stdio;

use e2e_tests::{Collector, User, event_count, free_port, wait_for};

/// 0 until the first upload has created the project at the collector.
fn command_count(collector: &Collector) -> u64 {
    collector
        .try_stats()
        .map_or(0, |stats| event_count(&stats, "command"))
}

fn opt_out_removes_every_row(tier: &str) {
    let collector = Collector::start();
    let user = User::new(collector.url());
    user.enable(tier, "a@example.org");
    user.run(&["init", "--default-name", "Ada"]);
    user.run(&["telemetry", "flush"]);
    wait_for("events to arrive", || {
        (collector.rows("events") > 0).then_some(())
    });
    assert_eq!(collector.rows("installs"), 1);

    user.run(&["telemetry", "disable"]);
    assert_eq!(user.status()["level"], "off");
    user.run(&["telemetry", "flush"]);
    for table in ["events", "installs", "install_weeks", "identities"] {
        assert_eq!(
            collector.rows(table),
            0,
            "{tier}: {table} still references the install"
        );
    }
    // Counters carry no id and keep the install counted.
    assert_eq!(collector.stats()["installs"], 1);
}

#[test]
fn disable_at_anonymous_deletes_at_the_collector() {
    opt_out_removes_every_row("anonymous");
}

#[test]
fn disable_at_full_deletes_at_the_collector() {
    opt_out_removes_every_row("full");
}

#[test]
fn a_collector_that_was_down_gets_every_event_exactly_once() {
    let port = free_port();
    let user = User::new(format!("http://127.0.0.1:{port}"));
    user.run(&["telemetry", "enable", "anonymous", "--yes"]);
    // Nothing listens on the port: every upload attempt is refused.
    for _ in 0..3 {
        user.run(&["greet"]);
    }
    let mut collector = Collector::start();
    collector.kill();
    collector.restart_on(port);
    // The user just keeps using the tool.
    let mut runs = 3;
    wait_for("the pending events to arrive", || {
        user.run(&["greet"]);
        runs += 1;
        std::thread::sleep(std::time::Duration::from_millis(500));
        (command_count(&collector) > 0).then_some(())
    });
    // Flush the last run's event too, then everything must be there exactly once.
    user.run(&["telemetry", "flush"]);
    wait_for("every greeting to be counted", || {
        (command_count(&collector) == runs).then_some(())
    });
    assert_eq!(
        collector.rows("events") as u64,
        runs + 2,
        "commands plus install and active, no duplicates"
    );
    assert_eq!(collector.stats()["installs"], 1);
}

#[test]
fn fifty_concurrent_processes_give_exact_counts() {
    let collector = Collector::start();
    let user = User::new(collector.url());
    user.run(&["telemetry", "enable", "anonymous", "--yes"]);
    let children: Vec<_> = (0..50)
        .map(|_| {
            user.demo(&["greet"])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawning demo-cli")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    user.run(&["telemetry", "flush"]);
    wait_for("all fifty greetings", || {
        (command_count(&collector) >= 50).then_some(())
    });
    assert_eq!(command_count(&collector), 50);
    let stats = collector.stats();
    assert_eq!(stats["installs"], 1);
    assert_eq!(stats["active_installs"], 1);
}
