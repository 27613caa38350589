//! The fleet drill of issue 13: a fleet of simulated installs, each a real
//! process with its own home, runs over simulated days against a real
//! collector behind the [fault proxy](crate::faultproxy), and what the
//! collector holds at the end is compared with what each process recorded
//! and what each user chose.
//!
//! # How it works
//!
//! - The collector runs in process (`telemetry_collector::serve` on
//!   `127.0.0.1:0`, a SQLite file, project `fleet-drill` with the manifest of
//!   [`manifest_text`]); the proxy sits in front and every client talks to
//!   the proxy only. In the *manifest window* the collector is restarted on
//!   the same database with a manifest that lacks the `extra` event the
//!   clients still send, then restarted with the full manifest again.
//! - Time is cut into slots (`slots_per_day` per simulated day). Each slot has
//!   one proxy [`Phase`]; in each slot a random part of the fleet runs the
//!   drill host (`drillhost`, see its source) with its clock set to the slot's
//!   simulated time, so the client's schedule and back-off play out over days
//!   in seconds. The detached uploader the client starts is left alone,
//!   except in the kill slots, where the drill `kill -9`s uploaders at random
//!   moments, and at the end of every slot, where uploaders still alive after
//!   the settle time (a blackholed upload waits 10 s) are killed too. Where
//!   the collector answers, the settle time is longer
//!   ([`FleetConfig::settle_reachable`]): a carrier sending a deletion and
//!   then its events through a slow phase on a loaded machine needs more than
//!   2 s, and killing it there would be a fault of the drill's own making
//!   that the deletion-latency target would then blame on the client.
//! - Along the way users opt in at a tier (some never do), run in debug mode
//!   (`FLEET_DRILL_TELEMETRY_DEBUG=1`), run under a ceiling
//!   (`FLEET_DRILL_TELEMETRY=aggregate`, `DO_NOT_TRACK=1`), opt out (one in
//!   three with `telemetry-consent disable --all`; half of those who opt out
//!   while the collector is reachable then "uninstall": they never run
//!   again), reset their id, downgrade
//!   and opt in again. Every withdrawal starts a new consent epoch.
//! - The drain days at the end pass everything through and every remaining
//!   user runs once per slot, recording nothing new, so whatever the clients
//!   kept has every chance to arrive.
//!
//! # Ground truth
//!
//! Every `command` and `extra` event carries four enum props: who recorded it
//! (`i000`..), in which consent epoch (`e00`..), in which slot (`s000`..) and
//! the level the drill expects the run to record at (`asked`). The collector
//! adds every event, at every tier, to its daily counters, which deletions do
//! not touch, so the counters count every event ever accepted per (who,
//! epoch, slot). The drill compares them with what it asked each run to
//! record, and cross-checks that with what the run says it recorded.
//!
//! - *Missing*: recorded but not counted, in an epoch the user did not end by
//!   withdrawing consent (data withdrawn before it was delivered may rightly
//!   be dropped; it is reported apart as `withdrawn_undelivered`).
//! - *Double-counted*: counted more often than recorded.
//! - *Above tier*: a counter stored at a tier above `asked`, an event row for
//!   a run at `aggregate` or `off`, an identity for an id never at `full`.
//! - *Deletions*: every install id a user retired (opt-out, reset, downgrade)
//!   must have a `/v1/delete` the collector acknowledged (the proxy logs it)
//!   and no row left under its pseudonym at the end. The latency is from the
//!   start of the command that retired the id to that acknowledgement.
//! - *Reported dropped*: the `telemetry_dropped` counters the clients sent, by
//!   reason; the target is that they equal what is missing. A client that
//!   counted a refusal and then opted out may never send its count (nothing
//!   leaves after an opt-out), so the drill also reads what each home's state
//!   file still holds unreported and adds it to the refused items before
//!   comparing them with the collector's `refusals` table. So does a
//!   refusal whose answer no client heard (cut off, or never read by an
//!   uploader killed first) and that no resend made heard: the collector
//!   counted it, and no client can. The proxy follows each refused item to
//!   its last answer to tell those apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use telemetry_client::PropInput;
use telemetry_protocol::manifest::builtin;
use telemetry_protocol::{Tier, Uuid};

use crate::Error;
use crate::faultproxy::{FaultProxy, Phase, ProxyEvent};

/// The drill host's project name.
pub const PROJECT: &str = "fleet-drill";
/// The event every run records; always declared.
pub const EVENT_COMMAND: &str = "command";
/// The event the collector's manifest lacks during the manifest window.
pub const EVENT_EXTRA: &str = "extra";
/// Most installs one drill can tell apart (an enum holds at most 256 values).
pub const MAX_INSTALLS: usize = 256;
/// Most consent epochs per install.
pub const MAX_EPOCHS: usize = 32;
/// Most schedule slots.
pub const MAX_SLOTS: usize = 256;
/// The prefix of the drill host's environment variables.
const ENV_PREFIX: &str = "FLEET_DRILL_TELEMETRY";
/// The admin token of the drill's collector (loopback only).
const ADMIN_TOKEN: &str = "fleetdrill-admin-token-0123456789abcdef0123456789";
/// Marks every process the drill starts, so uploaders can be found.
const MARKER_VAR: &str = crate::linger::MARKER_VAR;

/// The drill host's manifest; without `extra` for the collector's manifest
/// window.
pub fn manifest_text(with_extra: bool) -> String {
    let list = |prefix: &str, n: usize, width: usize| {
        (0..n)
            .map(|i| format!("\"{prefix}{i:0width$}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let props = format!(
        "props.who = {{ kind = \"enum\", values = [{}], description = \"Which simulated install\" }}\n\
         props.epoch = {{ kind = \"enum\", values = [{}], description = \"Which consent epoch of that install\" }}\n\
         props.slot = {{ kind = \"enum\", values = [{}], description = \"Which schedule slot\" }}\n\
         props.asked = {{ kind = \"enum\", values = [\"off\", \"aggregate\", \"anonymous\", \"full\"], description = \"The level the drill expects\" }}\n",
        list("i", MAX_INSTALLS, 3),
        list("e", MAX_EPOCHS, 2),
        list("s", MAX_SLOTS, 3),
    );
    let mut text = format!(
        "project = \"{PROJECT}\"\nendpoint = \"http://127.0.0.1:9\"\n\n\
         [events.{EVENT_COMMAND}]\ndescription = \"A drill command ran\"\nmin_tier = \"aggregate\"\n{props}\n"
    );
    if with_extra {
        text.push_str(&format!(
            "[events.{EVENT_EXTRA}]\ndescription = \"An event the collector sometimes lacks\"\nmin_tier = \"aggregate\"\n{props}\n"
        ));
    }
    text.push_str("[identity.email]\ndescription = \"An address to write to\"\nmax_len = 64\n");
    text
}

/// The ground-truth tags of one run's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    /// The install's index.
    pub who: usize,
    /// Its consent epoch.
    pub epoch: usize,
    /// The schedule slot.
    pub slot: usize,
    /// The level the drill expects the run to record at.
    pub asked: String,
}

impl Tags {
    /// The props that carry the tags.
    pub fn props(&self) -> [(&'static str, PropInput); 4] {
        [
            ("who", format!("i{:03}", self.who).into()),
            ("epoch", format!("e{:02}", self.epoch).into()),
            ("slot", format!("s{:03}", self.slot).into()),
            ("asked", self.asked.clone().into()),
        ]
    }
}

/// One drill.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The `drillhost` binary.
    pub host: PathBuf,
    /// A fresh folder for the homes, the database and the logs.
    pub dir: PathBuf,
    /// Simulated installs (at most [`MAX_INSTALLS`]).
    pub installs: usize,
    /// Simulated days with faults.
    pub days: u32,
    /// Slots per simulated day.
    pub slots_per_day: u32,
    /// Days of pass-through at the end.
    pub drain_days: u32,
    /// The proxy phase of each fault slot, cycled.
    pub phases: Vec<Phase>,
    /// Fault slots in which the collector's manifest lacks `extra`.
    pub manifest_window: Vec<usize>,
    /// Fault slots in which uploaders are `kill -9`ed at random moments.
    pub kill_slots: Vec<usize>,
    /// Chance that an install runs in a fault slot.
    pub run_probability: f64,
    /// Whether some runs are in debug mode or under a ceiling.
    pub env_variants: bool,
    /// Processes at once.
    pub concurrency: usize,
    /// How long the drill waits for uploaders after a slot before killing them.
    pub settle: Duration,
    /// The settle limit in slots whose phase is reachable: uploaders that
    /// still run at its end are killed, and a deletion they carried then
    /// waits for the user's next run, so it bounds the deletion latency that
    /// the drill measures while reachable.
    pub settle_reachable: Duration,
    /// A limit on one process.
    pub step_timeout: Duration,
    /// A limit on the whole schedule; later slots are skipped past it.
    pub max_duration: Duration,
    /// The random seed.
    pub seed: u64,
}

impl FleetConfig {
    /// The short form run by `cargo test`: 200 installs, 3 simulated days of
    /// 4 slots, every phase once but `down` twice, then one drain day.
    pub fn short_form(host: PathBuf, dir: PathBuf) -> FleetConfig {
        FleetConfig {
            host,
            dir,
            installs: 200,
            days: 3,
            slots_per_day: 4,
            drain_days: 1,
            phases: vec![
                Phase::Pass,
                Phase::Down,
                Phase::Status500,
                Phase::Pass,
                Phase::Refuse,
                Phase::Status503(1_000_000_000_000),
                Phase::Blackhole,
                Phase::Pass,
                Phase::TooLarge(768),
                Phase::Slow(Duration::from_millis(1500)),
                Phase::ResetMidResponse,
                Phase::Status429(120),
            ],
            manifest_window: vec![7],
            kill_slots: vec![3, 9],
            run_probability: 0.3,
            env_variants: true,
            concurrency: 8,
            settle: Duration::from_secs(2),
            settle_reachable: Duration::from_secs(10),
            step_timeout: Duration::from_secs(20),
            max_duration: Duration::from_secs(75),
            seed: 13,
        }
    }

    /// The long form of `scripts/bench.sh`: 250 installs, 14 simulated days
    /// of 6 slots cycling every phase, two manifest windows, kills every few
    /// slots, two drain days.
    pub fn long_form(host: PathBuf, dir: PathBuf) -> FleetConfig {
        let phases = vec![
            Phase::Pass,
            Phase::Down,
            Phase::Pass,
            Phase::Refuse,
            Phase::Blackhole,
            Phase::Pass,
            Phase::Status500,
            Phase::Status503(1_000_000_000_000),
            Phase::Status503(30),
            Phase::Pass,
            Phase::Status429(120),
            Phase::TooLarge(768),
            Phase::Slow(Duration::from_millis(2500)),
            Phase::ResetMidResponse,
        ];
        FleetConfig {
            installs: 250,
            days: 14,
            slots_per_day: 6,
            drain_days: 2,
            phases,
            // Pass slots (cycle positions 5, 0 and 2), so clients meet the
            // lacking manifest; kills in pass and slow slots (positions 2, 12),
            // while uploads are in flight.
            manifest_window: vec![19, 56, 58],
            kill_slots: (0..84).filter(|s| s % 14 == 2 || s % 14 == 12).collect(),
            run_probability: 0.35,
            max_duration: Duration::from_secs(1500),
            ..FleetConfig::short_form(host, dir)
        }
    }

    /// The control run: the same fleet and schedule with every slot passing
    /// through, no manifest window, no kills, no debug or ceiling runs.
    /// Whatever it reports missing is not caused by the faults.
    pub fn calm(mut self) -> FleetConfig {
        self.phases = vec![Phase::Pass];
        self.manifest_window.clear();
        self.kill_slots.clear();
        self.env_variants = false;
        self
    }

    fn fault_slots(&self) -> usize {
        (self.days * self.slots_per_day) as usize
    }

    fn total_slots(&self) -> usize {
        ((self.days + self.drain_days) * self.slots_per_day) as usize
    }

    fn phase(&self, slot: usize) -> Phase {
        if slot >= self.fault_slots() || self.phases.is_empty() {
            Phase::Pass
        } else {
            self.phases[slot % self.phases.len()]
        }
    }
}

/// What the drill found. Percentages are of the events recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetReport {
    /// Simulated installs.
    pub installs: usize,
    /// Simulated days, drain included.
    pub days: u32,
    /// Slots run (fewer than planned when the time limit was hit).
    pub slots_run: usize,
    /// Whether the time limit cut the schedule short.
    pub cut_short: bool,
    /// Processes the drill started (host runs and `telemetry` commands).
    pub processes: u64,
    /// Of those, the ones that failed or timed out.
    pub process_failures: u64,
    /// The failures by what the process was asked to do.
    pub process_failures_by_step: BTreeMap<String, u64>,
    /// Runs in debug mode.
    pub debug_runs: u64,
    /// Runs under a ceiling (`<TOOL>_TELEMETRY` or `DO_NOT_TRACK`).
    pub ceiling_runs: u64,
    /// Opt-outs, id resets and downgrades that ended a consent epoch.
    pub withdrawals: u64,
    /// Of the opt-outs, those made with `telemetry-consent disable --all`.
    pub consent_tool_optouts: u64,
    /// Uploaders killed with SIGKILL on purpose in the kill slots.
    pub uploaders_killed: u64,
    /// Uploaders still alive at the end of a slot's settle time, then killed.
    pub uploaders_lingering_killed: u64,
    /// Events the processes recorded (command and extra), by the drill's account.
    pub recorded: u64,
    /// Runs whose own count of recorded events differs from the drill's.
    pub recorded_disagreements: u64,
    /// Recorded events the collector counts (once or more).
    pub counted: u64,
    /// Recorded, not counted, in epochs the user did not withdraw.
    pub missing: u64,
    /// `missing` in % of `recorded`.
    pub missing_pct: f64,
    /// `missing` by the phase of the slot in which the events were recorded.
    pub missing_by_phase: BTreeMap<String, u64>,
    /// `missing` by event.
    pub missing_by_event: BTreeMap<String, u64>,
    /// `missing` by the likeliest cause: recorded in the manifest window, in
    /// a kill slot, or else the slot's phase.
    pub missing_by_cause: BTreeMap<String, u64>,
    /// Events of debug runs that the collector counted. A debug run prints
    /// what would be sent and keeps nothing, so its events are expected
    /// nowhere; any counted here are also in `double_counted`.
    pub sent_from_debug_runs: u64,
    /// Counted more often than recorded (or counted, never recorded).
    pub double_counted: u64,
    /// `double_counted` in % of `recorded`.
    pub double_counted_pct: f64,
    /// `double_counted` by the phase of the slot in which the events were recorded.
    pub double_by_phase: BTreeMap<String, u64>,
    /// Recorded in an epoch the user ended by withdrawing, never delivered:
    /// dropping these is right.
    pub withdrawn_undelivered: u64,
    /// What the clients reported dropped (`telemetry_dropped`), by reason.
    pub reported_dropped: BTreeMap<String, u64>,
    /// The sum of `reported_dropped`.
    pub reported_dropped_total: u64,
    /// Drops the clients counted but have not reported, by reason, read from
    /// each home's state file at the end (`dropped`, and a delivery-health
    /// report the collector has not stored): chiefly those of users who opted
    /// out after a refusal, who may never send anything again.
    pub unreported_dropped: BTreeMap<String, u64>,
    /// Items the collector refused on their own whose last answer no client
    /// heard (the proxy cut it off, or the client was killed before reading
    /// it) and that no client sent again to hear it refused: the collector
    /// counted each, no client can. Chiefly an item refused while the
    /// manifest lacked it, whose answer was lost and that was then sent again
    /// once the manifest had it (and accepted), or whose user withdrew
    /// before sending it again (see `FaultProxy::unheard_refusals`).
    pub refusals_unheard: u64,
    /// Refusals the collector's answers counted but did not name, which the
    /// proxy cannot follow; must be 0 for the comparison to be exact.
    pub refusals_unnamed: u64,
    /// Items the collector refused on their own (its `refusals` table, less
    /// downgrades and ignored fields): what the clients' `refused_items`
    /// must add up to.
    pub collector_refused: u64,
    /// Whether any client reported a limit hit (spool or outbox full or expired).
    pub limit_hit: bool,
    /// Rows above the tier the user chose (counters, events, identities).
    pub above_tier_rows: u64,
    /// Install ids whose deletion the users asked for.
    pub deletions_expected: u64,
    /// Of those, acknowledged by the collector with nothing left under the id.
    pub deletions_honoured: u64,
    /// `deletions_honoured` in % of `deletions_expected`.
    pub deletions_honoured_pct: f64,
    /// Acknowledged deletions that still have rows (data sent after the delete).
    pub deletions_with_rows_left: u64,
    /// Deletions never acknowledged whose user "uninstalled" after opting
    /// out (never ran the tool again).
    pub deletions_missed_after_uninstall: u64,
    /// Final withdrawals by users who then uninstalled, made while the
    /// collector was unreachable or in a kill slot (where the drill may have
    /// killed the process carrying the request): no process of theirs runs
    /// again to deliver it, so no client can honour these. They are
    /// reported, not targeted.
    pub deletions_undeliverable: u64,
    /// Seconds from the withdrawal to the acknowledged delete, median.
    pub deletion_p50_secs: Option<f64>,
    /// The same, 99th percentile, over acknowledged deletions.
    pub deletion_p99_secs: Option<f64>,
    /// Withdrawals made while the collector was reachable.
    pub deletions_while_reachable: u64,
    /// The 99th percentile over those, counting a deletion never honoured as
    /// infinitely late (`None` then).
    pub deletion_p99_reachable_secs: Option<f64>,
    /// Install ids a client switched to without being asked (a lost state file).
    pub silent_id_changes: u64,
    /// `install` lifecycle events the collector counts.
    pub install_events_counted: u64,
    /// Distinct install ids the drill saw (an upper bound on honest `install`
    /// events at anonymous and full).
    pub install_ids_seen: u64,
    /// Requests the proxy saw, by phase, path and answer.
    pub proxy_requests: BTreeMap<String, u64>,
    /// Wall time, in seconds.
    pub elapsed_secs: f64,
}

/// One of the targets and whether it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What must hold.
    pub name: &'static str,
    /// Whether it does.
    pub passed: bool,
    /// The figures behind it.
    pub detail: String,
}

impl FleetReport {
    /// The targets of issue 13, each with its verdict.
    pub fn targets(&self) -> Vec<Target> {
        let missing_of = |event: &str| self.missing_by_event.get(event).copied().unwrap_or(0);
        let missing_commands = missing_of(EVENT_COMMAND);
        let missing_extras = missing_of(EVENT_EXTRA);
        let reported_refused = self
            .reported_dropped
            .get("refused_items")
            .copied()
            .unwrap_or(0);
        let reported_local = self.reported_dropped_total - reported_refused;
        let unreported_refused = self
            .unreported_dropped
            .get("refused_items")
            .copied()
            .unwrap_or(0);
        vec![
            Target {
                name: "0 double-counted",
                passed: self.double_counted == 0,
                detail: format!("{} double-counted", self.double_counted),
            },
            Target {
                name: "0 rows above tier",
                passed: self.above_tier_rows == 0,
                detail: format!("{} rows above tier", self.above_tier_rows),
            },
            Target {
                name: "100% of deletions honoured",
                passed: self.deletions_honoured + self.deletions_undeliverable
                    >= self.deletions_expected,
                detail: format!(
                    "{} of {} ({:.1}%); {} undeliverable (opted out during an outage or a kill slot, then uninstalled)",
                    self.deletions_honoured,
                    self.deletions_expected,
                    self.deletions_honoured_pct,
                    self.deletions_undeliverable
                ),
            },
            Target {
                name: "deletion p99 < 10 s while reachable",
                passed: self.deletion_p99_reachable_secs.is_some_and(|p| p < 10.0),
                detail: match self.deletion_p99_reachable_secs {
                    Some(p) => format!("p99 {p:.2} s over {}", self.deletions_while_reachable),
                    None => format!("some of {} never deleted", self.deletions_while_reachable),
                },
            },
            // `command` is declared in every manifest of the drill, so only a
            // client-side drop can lose one: those must match exactly.
            // `extra` is refused in the manifest window; the clients' count
            // of refused items, with the refusals whose answer no client
            // heard, must equal the collector's, and cover every missing
            // `extra`. Equality there is not asked for: an `extra` refused in
            // an epoch the user later withdrew is reported by the client but,
            // as withdrawn, not counted missing.
            Target {
                name: "missing == reported dropped",
                passed: missing_commands == reported_local
                    && self.refusals_unnamed == 0
                    && reported_refused + unreported_refused + self.refusals_unheard
                        == self.collector_refused
                    && missing_extras
                        <= reported_refused + unreported_refused + self.refusals_unheard
                    && self.missing == missing_commands + missing_extras,
                detail: format!(
                    "{} missing ({missing_commands} `command`, {missing_extras} `extra`); \
                     reported dropped: {reported_local} locally, {reported_refused} refused \
                     (+{unreported_refused} counted, not reported, \
                     +{} never heard, {} unnamed); the collector refused {}",
                    self.missing,
                    self.refusals_unheard,
                    self.refusals_unnamed,
                    self.collector_refused
                ),
            },
            Target {
                name: "0 missing when no limit was hit",
                passed: self.limit_hit || missing_commands == 0,
                detail: format!(
                    "limit hit: {}; {missing_commands} `command` events missing",
                    self.limit_hit
                ),
            },
        ]
    }

    /// Whether every target holds.
    pub fn passed(&self) -> bool {
        self.targets().iter().all(|t| t.passed)
    }

    /// The report as Markdown: figures, causes, targets.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(
            &mut out,
            format!(
                "{} installs, {} simulated days, {} slots{}, {} processes ({} failed: {:?}), {:.0} s",
                self.installs,
                self.days,
                self.slots_run,
                if self.cut_short { " (cut short)" } else { "" },
                self.processes,
                self.process_failures,
                self.process_failures_by_step,
                self.elapsed_secs
            ),
        );
        line(
            &mut out,
            format!(
                "{} debug runs, {} ceiling runs, {} withdrawals ({} opt-outs with `telemetry-consent disable --all`), {} uploaders killed on purpose, {} lingering uploaders killed",
                self.debug_runs,
                self.ceiling_runs,
                self.withdrawals,
                self.consent_tool_optouts,
                self.uploaders_killed,
                self.uploaders_lingering_killed
            ),
        );
        line(&mut out, String::new());
        line(&mut out, "| figure | value |".into());
        line(&mut out, "|---|---|".into());
        let row = |out: &mut String, k: &str, v: String| line(out, format!("| {k} | {v} |"));
        row(&mut out, "events recorded", self.recorded.to_string());
        row(&mut out, "counted", self.counted.to_string());
        row(
            &mut out,
            "missing",
            format!("{} ({:.2}%)", self.missing, self.missing_pct),
        );
        row(
            &mut out,
            "double-counted",
            format!("{} ({:.2}%)", self.double_counted, self.double_counted_pct),
        );
        row(
            &mut out,
            "withdrawn before delivery (allowed)",
            self.withdrawn_undelivered.to_string(),
        );
        row(
            &mut out,
            "reported dropped (telemetry_dropped)",
            format!(
                "{} {:?}",
                self.reported_dropped_total, self.reported_dropped
            ),
        );
        row(
            &mut out,
            "counted by clients, not reported",
            format!("{:?}", self.unreported_dropped),
        );
        row(
            &mut out,
            "refused, answer never heard by a client",
            format!(
                "{} (+{} the answers did not name)",
                self.refusals_unheard, self.refusals_unnamed
            ),
        );
        row(
            &mut out,
            "refused, by the collector's `refusals` table",
            self.collector_refused.to_string(),
        );
        row(
            &mut out,
            "rows above tier",
            self.above_tier_rows.to_string(),
        );
        row(
            &mut out,
            "deletions honoured",
            format!(
                "{} of {} ({:.1}%), {} with rows left; {} never sent by users who uninstalled",
                self.deletions_honoured,
                self.deletions_expected,
                self.deletions_honoured_pct,
                self.deletions_with_rows_left,
                self.deletions_missed_after_uninstall
            ),
        );
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.2} s"));
        row(
            &mut out,
            "opt-out to deletion p50 / p99",
            format!(
                "{} / {}",
                secs(self.deletion_p50_secs),
                secs(self.deletion_p99_secs)
            ),
        );
        row(
            &mut out,
            "p99 while reachable (never = unbounded)",
            format!(
                "{} over {}",
                self.deletion_p99_reachable_secs
                    .map_or("never".to_owned(), |s| format!("{s:.2} s")),
                self.deletions_while_reachable
            ),
        );
        row(
            &mut out,
            "silent install id changes",
            self.silent_id_changes.to_string(),
        );
        row(
            &mut out,
            "`install` events counted / ids seen",
            format!(
                "{} / {}",
                self.install_events_counted, self.install_ids_seen
            ),
        );
        row(
            &mut out,
            "runs whose own count disagrees",
            self.recorded_disagreements.to_string(),
        );
        line(&mut out, String::new());
        line(&mut out, "Missing by cause:".into());
        for (k, v) in &self.missing_by_cause {
            line(&mut out, format!("- {k}: {v}"));
        }
        line(
            &mut out,
            format!(
                "Missing by event: {:?}; counted from debug runs: {}",
                self.missing_by_event, self.sent_from_debug_runs
            ),
        );
        line(&mut out, "Double-counted by phase recorded in:".into());
        for (k, v) in &self.double_by_phase {
            line(&mut out, format!("- {k}: {v}"));
        }
        line(&mut out, String::new());
        line(
            &mut out,
            "Requests at the proxy (phase | path | answer: count):".into(),
        );
        for (k, v) in &self.proxy_requests {
            line(&mut out, format!("- {k}: {v}"));
        }
        line(&mut out, String::new());
        line(&mut out, "| target | verdict | figures |".into());
        line(&mut out, "|---|---|---|".into());
        for t in self.targets() {
            line(
                &mut out,
                format!(
                    "| {} | {} | {} |",
                    t.name,
                    if t.passed { "pass" } else { "FAIL" },
                    t.detail
                ),
            );
        }
        out
    }
}

/// A small deterministic random source (splitmix64): the schedule is the
/// same for the same seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the drill asks one process to do.
#[derive(Debug, Clone)]
enum Step {
    Run {
        tags: Tags,
        commands: u64,
        extras: u64,
        /// Extra environment: debug mode or a ceiling.
        env: Vec<(String, String)>,
    },
    Init,
    Enable(Tier),
    Disable,
    /// `telemetry-consent disable --all`, the machine-wide opt-out.
    ConsentDisableAll,
    ResetId,
    Status,
}

impl Step {
    /// What the step runs, for reports.
    fn name(&self) -> &'static str {
        match self {
            Step::Run { .. } => "run",
            Step::Init => "init",
            Step::Enable(_) => "telemetry enable",
            Step::Disable => "telemetry disable",
            Step::ConsentDisableAll => "telemetry-consent disable --all",
            Step::ResetId => "telemetry reset-id",
            Step::Status => "telemetry status",
        }
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, Default)]
struct Outcome {
    ok: bool,
    stdout: String,
    started: Duration,
}

/// A consent epoch of one install: one level, the ids seen in it, and how it ended.
#[derive(Debug, Clone)]
struct Epoch {
    level: Tier,
    ids: Vec<Uuid>,
    withdrawn: Option<Withdrawal>,
}

#[derive(Debug, Clone)]
struct Withdrawal {
    /// The id retired, when the epoch had one.
    id: Option<Uuid>,
    /// When the retiring command started.
    at: Duration,
    /// Whether the collector was reachable then.
    reachable: bool,
    /// Whether it was made in a kill slot, where the drill may `kill -9` the
    /// detached process that carries the deletion.
    in_kill_slot: bool,
}

#[derive(Debug, Clone)]
struct User {
    home: PathBuf,
    level: Tier,
    uninstalled: bool,
    epochs: Vec<Epoch>,
}

impl User {
    fn epoch(&self) -> usize {
        self.epochs.len() - 1
    }
}

/// A planned action on one user within a slot, in order.
#[derive(Debug, Clone)]
struct Task {
    user: usize,
    steps: Vec<Planned>,
}

/// A step, the consent epoch it runs in, and whether it ends that epoch by
/// withdrawing consent (opt-out, id reset, downgrade).
#[derive(Debug, Clone)]
struct Planned {
    step: Step,
    epoch: usize,
    withdraws: bool,
}

/// Runs the drill. Bounded by `config.max_duration` (the schedule) plus one
/// settle time per slot and the final drain.
pub fn run(config: &FleetConfig) -> Result<FleetReport, Error> {
    if config.installs == 0 || config.installs > MAX_INSTALLS {
        return Err(Error::InvalidArgument(format!(
            "installs must be 1 to {MAX_INSTALLS}"
        )));
    }
    if config.total_slots() > MAX_SLOTS {
        return Err(Error::InvalidArgument(format!(
            "at most {MAX_SLOTS} slots (days x slots per day)"
        )));
    }
    if !config.host.is_file() {
        return Err(Error::InvalidArgument(format!(
            "the drill host {} does not exist",
            config.host.display()
        )));
    }
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| Error::io(format!("creating {}", config.dir.display()), e))?;
    for (name, with_extra) in [
        ("manifest-full.toml", true),
        ("manifest-lacking.toml", false),
    ] {
        std::fs::write(config.dir.join(name), manifest_text(with_extra))
            .map_err(|e| Error::io("writing a manifest", e))?;
    }
    let epoch = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting a tokio runtime", e))?;
    let mut collector = runtime.block_on(Collector::start(&config.dir, true))?;
    let proxy = runtime.block_on(FaultProxy::start(&collector.url, epoch))?;
    let mut drill = Drill {
        config,
        epoch,
        marker: crate::linger::new_marker("fleetdrill"),
        endpoint: proxy.url(),
        users: Vec::new(),
        expected: BTreeMap::new(),
        debug_keys: BTreeSet::new(),
        report: FleetReport {
            installs: config.installs,
            days: config.days + config.drain_days,
            ..FleetReport::default()
        },
        rng: Rng(config.seed),
        reachable: true,
        killing: false,
    };
    drill.make_homes()?;
    let total = config.total_slots();
    let lacking: BTreeSet<usize> = config.manifest_window.iter().copied().collect();
    let mut collector_lacking = false;
    for slot in 0..total {
        if slot < config.fault_slots() && epoch.elapsed() > config.max_duration {
            drill.report.cut_short = true;
            continue;
        }
        let want_lacking = lacking.contains(&slot);
        if want_lacking != collector_lacking {
            runtime.block_on(collector.stop());
            collector = runtime.block_on(Collector::start(&config.dir, !want_lacking))?;
            proxy.set_upstream(&collector.url);
            collector_lacking = want_lacking;
        }
        let phase = config.phase(slot);
        proxy.set_phase(phase);
        drill.reachable = phase.reachable();
        let tasks = drill.plan(slot);
        let kill = config.kill_slots.contains(&slot);
        drill.killing = kill;
        let outcomes = drill.execute(slot, &tasks, kill);
        drill.apply(&tasks, &outcomes);
        drill.settle();
        drill.report.slots_run += 1;
    }
    proxy.set_phase(Phase::Pass);
    drill.reachable = true;
    drill.settle();
    runtime.block_on(collector.stop());
    runtime.block_on(proxy.settled(Duration::from_secs(15)));
    let log = proxy.log();
    drill.report.refusals_unheard = proxy.unheard_refusals();
    drill.report.refusals_unnamed = proxy.unnamed_refusals();
    drop(proxy);
    runtime.shutdown_timeout(Duration::from_secs(1));
    drill.compare(&log)?;
    drill.report.elapsed_secs = epoch.elapsed().as_secs_f64();
    Ok(drill.report)
}

/// The drill's running state.
struct Drill<'a> {
    config: &'a FleetConfig,
    epoch: Instant,
    marker: String,
    endpoint: String,
    users: Vec<User>,
    /// (who, epoch, slot, event) -> events the drill asked to be recorded.
    expected: BTreeMap<(usize, usize, usize, String), u64>,
    /// Keys of events asked for in a debug run, which must never arrive.
    debug_keys: BTreeSet<(usize, usize, usize, String)>,
    report: FleetReport,
    rng: Rng,
    /// Whether the collector can be reached in this slot.
    reachable: bool,
    /// Whether the current slot is a kill slot.
    killing: bool,
}

impl Drill<'_> {
    fn make_homes(&mut self) -> Result<(), Error> {
        for i in 0..self.config.installs {
            let home = self.config.dir.join("homes").join(format!("i{i:03}"));
            for sub in [".config", ".local/state", ".local/share", ".cache"] {
                std::fs::create_dir_all(home.join(sub))
                    .map_err(|e| Error::io(format!("creating {}", home.display()), e))?;
            }
            self.users.push(User {
                home,
                level: Tier::Off,
                uninstalled: false,
                epochs: vec![Epoch {
                    level: Tier::Off,
                    ids: Vec::new(),
                    withdrawn: None,
                }],
            });
        }
        Ok(())
    }

    /// The simulated time of a step: slots spread evenly over the day, each
    /// install a second apart, steps a minute apart, ending well before now.
    fn now_ms(&self, slot: usize, user: usize, step: usize) -> i64 {
        let day_ms = 86_400_000i64;
        let today = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64))
            / day_ms
            * day_ms;
        let days = i64::from(self.config.days + self.config.drain_days);
        let start = today - (days + 1) * day_ms;
        let slot_ms = day_ms / i64::from(self.config.slots_per_day.max(1));
        start + slot as i64 * slot_ms + user as i64 * 1000 + step as i64 * 60_000
    }

    /// Decides what each install does in `slot`, updating the planned levels
    /// and epochs (ids are learnt when the steps have run).
    fn plan(&mut self, slot: usize) -> Vec<Task> {
        let fault = slot < self.config.fault_slots();
        let last_actions = self.config.total_slots().saturating_sub(2);
        let mut tasks = Vec::new();
        for u in 0..self.users.len() {
            let mut steps = Vec::new();
            if slot == 0 {
                // One in ten never opts in; the rest choose a tier.
                if !self.rng.chance(0.1) {
                    let tier = match self.rng.below(100) {
                        0..40 => Tier::Aggregate,
                        40..85 => Tier::Anonymous,
                        _ => Tier::Full,
                    };
                    self.start_epoch(u, tier);
                    for step in [Step::Enable(tier), Step::Status, Step::Init] {
                        steps.push(Planned {
                            step,
                            epoch: 0,
                            withdraws: false,
                        });
                    }
                }
            }
            if self.users[u].uninstalled {
                continue;
            }
            let runs = if fault {
                self.rng.chance(self.config.run_probability)
            } else {
                true
            };
            if runs {
                let mut env = Vec::new();
                let level = self.users[u].level;
                let mut asked = level;
                if fault {
                    let roll = self.rng.below(100);
                    let roll = if self.config.env_variants { roll } else { 100 };
                    match roll {
                        0..6 => {
                            env.push((format!("{ENV_PREFIX}_DEBUG"), "1".to_owned()));
                            self.report.debug_runs += 1;
                        }
                        6..11 => {
                            env.push((ENV_PREFIX.to_owned(), "aggregate".to_owned()));
                            asked = asked.min(Tier::Aggregate);
                            self.report.ceiling_runs += 1;
                        }
                        11..14 => {
                            env.push(("DO_NOT_TRACK".to_owned(), "1".to_owned()));
                            asked = Tier::Off;
                            self.report.ceiling_runs += 1;
                        }
                        _ => {}
                    }
                }
                let (commands, extras) = if fault {
                    (1 + self.rng.below(3), u64::from(self.rng.chance(0.3)))
                } else {
                    (0, 0)
                };
                let tags = Tags {
                    who: u,
                    epoch: self.users[u].epoch(),
                    slot,
                    asked: asked.to_string(),
                };
                if asked > Tier::Off {
                    let debug = !env.is_empty() && env[0].0.ends_with("_DEBUG");
                    for (event, n) in [(EVENT_COMMAND, commands), (EVENT_EXTRA, extras)] {
                        if n > 0 {
                            let key = (u, tags.epoch, slot, event.to_owned());
                            // A debug run keeps nothing: its events must
                            // never arrive, so none are expected.
                            if debug {
                                self.debug_keys.insert(key);
                            } else {
                                *self.expected.entry(key).or_default() += n;
                            }
                        }
                    }
                }
                let epoch = tags.epoch;
                steps.push(Planned {
                    step: Step::Run {
                        tags,
                        commands,
                        extras,
                        env,
                    },
                    epoch,
                    withdraws: false,
                });
            }
            if slot < last_actions && self.users[u].epochs.len() < MAX_EPOCHS {
                let reachable = self.config.phase(slot).reachable();
                self.plan_action(u, &mut steps, reachable);
            }
            if !steps.is_empty() {
                tasks.push(Task { user: u, steps });
            }
        }
        tasks
    }

    fn start_epoch(&mut self, u: usize, tier: Tier) {
        let user = &mut self.users[u];
        user.level = tier;
        if user.epochs.len() == 1
            && user.epochs[0].level == Tier::Off
            && user.epochs[0].ids.is_empty()
        {
            user.epochs[0].level = tier;
        } else {
            user.epochs.push(Epoch {
                level: tier,
                ids: Vec::new(),
                withdrawn: None,
            });
        }
    }

    /// Maybe opts the user out, resets the id, downgrades or opts in again.
    /// Only a user who opts out while the collector is reachable may
    /// uninstall: no client can deliver a deletion from a machine on which
    /// the tool never runs again after an opt-out the collector never heard.
    fn plan_action(&mut self, u: usize, steps: &mut Vec<Planned>, reachable: bool) {
        let level = self.users[u].level;
        let e = self.users[u].epoch();
        let at = |step: Step, epoch: usize, withdraws: bool| Planned {
            step,
            epoch,
            withdraws,
        };
        let roll = self.rng.below(1000);
        if level > Tier::Off && roll < 30 {
            steps.push(at(Step::Status, e, false));
            // One opt-out in three through the machine-wide consent tool.
            if self.rng.chance(1.0 / 3.0) {
                steps.push(at(Step::ConsentDisableAll, e, true));
                self.report.consent_tool_optouts += 1;
            } else {
                steps.push(at(Step::Disable, e, true));
            }
            self.start_epoch(u, Tier::Off);
            if self.rng.chance(0.5) && reachable {
                self.users[u].uninstalled = true;
            }
        } else if level >= Tier::Anonymous && roll < 60 {
            steps.push(at(Step::Status, e, false));
            steps.push(at(Step::ResetId, e, true));
            steps.push(at(Step::Status, e + 1, false));
            self.start_epoch(u, level);
        } else if level >= Tier::Anonymous && roll < 80 {
            steps.push(at(Step::Status, e, false));
            steps.push(at(Step::Enable(Tier::Aggregate), e, true));
            self.start_epoch(u, Tier::Aggregate);
        } else if level == Tier::Off && self.users[u].epochs.len() > 1 && roll < 150 {
            let tier = if self.rng.chance(0.5) {
                Tier::Aggregate
            } else {
                Tier::Anonymous
            };
            steps.push(at(Step::Enable(tier), e, false));
            steps.push(at(Step::Status, e + 1, false));
            self.start_epoch(u, tier);
        }
    }

    fn command(&self, user: usize, slot: usize, index: usize, step: &Step) -> Command {
        let home = &self.users[user].home;
        let mut cmd = Command::new(&self.config.host);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env(format!("{ENV_PREFIX}_ENDPOINT"), &self.endpoint)
            .env("DRILL_NOW_MS", self.now_ms(slot, user, index).to_string())
            .env(MARKER_VAR, &self.marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            cmd.env("TMPDIR", tmp);
        }
        match step {
            Step::Run {
                tags,
                commands,
                extras,
                env,
            } => {
                cmd.args(["run", "--who", &tags.who.to_string()])
                    .args(["--epoch", &tags.epoch.to_string()])
                    .args(["--slot", &tags.slot.to_string()])
                    .args(["--asked", &tags.asked])
                    .args(["--commands", &commands.to_string()])
                    .args(["--extras", &extras.to_string()]);
                for (k, v) in env {
                    cmd.env(k, v);
                }
            }
            Step::Init => {
                cmd.arg("init");
            }
            Step::Enable(tier) => {
                cmd.args(["telemetry", "enable", &tier.to_string()]);
                if *tier == Tier::Full {
                    cmd.args(["--yes", "--identity", "email=drill@example.invalid"]);
                }
            }
            Step::Disable => {
                cmd.args(["telemetry", "disable"]);
            }
            Step::ConsentDisableAll => {
                cmd.args(["consent", "disable", "--all"]);
            }
            Step::ResetId => {
                cmd.args(["telemetry", "reset-id"]);
            }
            Step::Status => {
                cmd.args(["telemetry", "status", "--json"]);
            }
        }
        cmd
    }

    /// Runs the slot's tasks, `concurrency` processes at a time; each task's
    /// steps in order. In a kill slot, a watcher SIGKILLs uploaders meanwhile.
    fn execute(&mut self, slot: usize, tasks: &[Task], kill: bool) -> Vec<Vec<Outcome>> {
        let next = AtomicU64::new(0);
        let results: Mutex<Vec<Vec<Outcome>>> = Mutex::new(vec![Vec::new(); tasks.len()]);
        let done = AtomicBool::new(false);
        let killed = AtomicU64::new(0);
        let processes = AtomicU64::new(0);
        let failures = AtomicU64::new(0);
        let failed_steps: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let this = &*self;
        std::thread::scope(|scope| {
            if kill {
                let (done, killed, marker) = (&done, &killed, &this.marker);
                let mut rng = Rng(this.config.seed ^ slot as u64);
                scope.spawn(move || kill_watcher(marker, done, killed, &mut rng));
            }
            let workers: Vec<_> = (0..this.config.concurrency.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                            let Some(task) = tasks.get(i) else { break };
                            let mut outs = Vec::new();
                            for (k, planned) in task.steps.iter().enumerate() {
                                let cmd = this.command(task.user, slot, k, &planned.step);
                                let out = run_bounded(cmd, this.config.step_timeout, this.epoch);
                                processes.fetch_add(1, Ordering::Relaxed);
                                if !out.ok {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    failed_steps
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .push(planned.step.name().to_owned());
                                }
                                outs.push(out);
                            }
                            results.lock().unwrap_or_else(|p| p.into_inner())[i] = outs;
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            done.store(true, Ordering::SeqCst);
        });
        self.report.uploaders_killed += killed.load(Ordering::SeqCst);
        self.report.processes += processes.load(Ordering::SeqCst);
        self.report.process_failures += failures.load(Ordering::SeqCst);
        for name in failed_steps.into_inner().unwrap_or_else(|p| p.into_inner()) {
            *self
                .report
                .process_failures_by_step
                .entry(name)
                .or_default() += 1;
        }
        results.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns install ids from the outcomes and records withdrawals.
    fn apply(&mut self, tasks: &[Task], outcomes: &[Vec<Outcome>]) {
        for (task, outs) in tasks.iter().zip(outcomes) {
            let u = task.user;
            let mut last_id: Option<Uuid> = None;
            for (planned, out) in task.steps.iter().zip(outs) {
                let e = planned.epoch;
                let parsed: Option<serde_json::Value> =
                    serde_json::from_str(out.stdout.trim()).ok();
                let id = parsed
                    .as_ref()
                    .and_then(|v| v["install_id"].as_str())
                    .and_then(|s| Uuid::parse_str(s).ok());
                if let Step::Run {
                    commands,
                    extras,
                    tags,
                    ..
                } = &planned.step
                {
                    let recorded = parsed.as_ref().and_then(|v| v["recorded"].as_u64());
                    let want = if tags.asked == "off" {
                        0
                    } else {
                        commands + extras
                    };
                    if recorded != Some(want) {
                        self.report.recorded_disagreements += 1;
                    }
                }
                if matches!(planned.step, Step::Run { .. } | Step::Status) && id.is_some() {
                    self.note_id(u, e, id);
                    last_id = id;
                }
                if planned.withdraws {
                    let level = self.users[u].epochs[e].level;
                    let retires = last_id.filter(|_| level >= Tier::Anonymous);
                    self.users[u].epochs[e].withdrawn = Some(Withdrawal {
                        id: retires,
                        at: out.started,
                        reachable: self.reachable,
                        in_kill_slot: self.killing,
                    });
                    self.report.withdrawals += 1;
                    last_id = None;
                }
            }
        }
    }

    fn note_id(&mut self, u: usize, e: usize, id: Option<Uuid>) {
        if let (Some(id), Some(ep)) = (id, self.users[u].epochs.get_mut(e))
            && !ep.ids.contains(&id)
        {
            ep.ids.push(id);
        }
    }

    /// Waits for uploaders to finish, up to the settle time, then kills the rest.
    fn settle(&mut self) {
        let limit = if self.reachable {
            self.config.settle_reachable
        } else {
            self.config.settle
        };
        let (_, left) = crate::linger::wait_gone(&self.marker, limit, Duration::from_millis(50));
        for pid in left {
            if sigkill(pid) {
                self.report.uploaders_lingering_killed += 1;
            }
        }
        let _ = crate::linger::wait_gone(
            &self.marker,
            Duration::from_secs(2),
            Duration::from_millis(20),
        );
    }

    /// Adds up the drops each home's state file still holds unreported: its
    /// `dropped` counts, less those of its delivery-health report when the
    /// collector stored that report's id (it was delivered, but the client
    /// did not see the answer). `dropped` keeps a pending report's counts
    /// until a 2xx.
    fn count_unreported(&mut self, conn: &rusqlite::Connection) -> Result<(), Error> {
        let dbe = |e: rusqlite::Error| Error::Database(e.to_string());
        let mut stored = conn
            .prepare(
                "SELECT COUNT(*) FROM seen_reports s JOIN projects p ON p.id = s.project
                 WHERE p.name = ?1 AND s.report_id = ?2",
            )
            .map_err(dbe)?;
        let counts = |v: &serde_json::Value| -> BTreeMap<String, u64> {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(reason, n)| (reason.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        };
        for user in &self.users {
            let path = user
                .home
                .join(".local/state/telemetry-toolkit")
                .join(PROJECT)
                .join("state.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::io(
                    format!("reading {}", path.display()),
                    std::io::Error::other(e),
                )
            })?;
            let mut left = counts(&state["dropped"]);
            let health = &state["health"];
            if let Some(id) = health["report_id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
            {
                let known: i64 = stored
                    .query_row(rusqlite::params![PROJECT, id.as_bytes().as_slice()], |r| {
                        r.get(0)
                    })
                    .map_err(dbe)?;
                if known > 0 {
                    for (reason, n) in counts(&health["counts"]) {
                        if let Some(l) = left.get_mut(&reason) {
                            *l = l.saturating_sub(n);
                        }
                    }
                }
            }
            for (reason, n) in left.into_iter().filter(|(_, n)| *n > 0) {
                *self.report.unreported_dropped.entry(reason).or_default() += n;
            }
        }
        Ok(())
    }

    /// Compares the collector's database with the ground truth.
    fn compare(&mut self, log: &[ProxyEvent]) -> Result<(), Error> {
        let db = self.config.dir.join("collector.db");
        let conn = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Database(format!("opening {}: {e}", db.display())))?;
        let dbe = |e: rusqlite::Error| Error::Database(e.to_string());
        let mut counted: BTreeMap<(usize, usize, usize, String), u64> = BTreeMap::new();
        let mut stmt = conn
            .prepare(
                "SELECT ev.text, pr.text, c.tier, SUM(c.count) FROM daily_counters c
                 JOIN projects p ON p.id = c.project
                 JOIN strings ev ON ev.id = c.event
                 JOIN strings pr ON pr.id = c.props
                 WHERE p.name = ?1 GROUP BY ev.text, pr.text, c.tier",
            )
            .map_err(dbe)?;
        let rows: Vec<(String, String, i64, i64)> = stmt
            .query_map([PROJECT], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(dbe)?
            .collect::<Result<_, _>>()
            .map_err(dbe)?;
        for (event, props, tier, count) in rows {
            let count = count.max(0) as u64;
            let props: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&props).unwrap_or_default();
            let prop = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            if event == builtin::DROPPED {
                let reason = prop(builtin::DROPPED_REASON_PROP).unwrap_or_default();
                *self.report.reported_dropped.entry(reason).or_default() += count;
                continue;
            }
            if event == builtin::INSTALL {
                self.report.install_events_counted += count;
                continue;
            }
            let (Some(who), Some(epoch), Some(slot), Some(asked)) =
                (prop("who"), prop("epoch"), prop("slot"), prop("asked"))
            else {
                continue;
            };
            let num = |s: &str| s[1..].parse::<usize>().unwrap_or(usize::MAX);
            let asked = Tier::from_str(&asked).unwrap_or(Tier::Off);
            if tier > telemetry_collector::store::sqlite::tier_code(asked) {
                self.report.above_tier_rows += 1;
            }
            *counted
                .entry((num(&who), num(&epoch), num(&slot), event))
                .or_default() += count;
        }
        drop(stmt);
        self.report.reported_dropped_total = self.report.reported_dropped.values().sum();
        self.report.limit_hit = ["spool_full", "outbox_full", "outbox_expired"]
            .iter()
            .any(|r| self.report.reported_dropped.get(*r).copied().unwrap_or(0) > 0);

        self.report.collector_refused = conn
            .query_row(
                "SELECT COALESCE(SUM(r.count), 0) FROM refusals r
                 JOIN projects p ON p.id = r.project
                 WHERE p.name = ?1 AND r.reason NOT LIKE 'downgraded_%'
                   AND r.reason <> 'ignored_field'",
                [PROJECT],
                |r| r.get::<_, i64>(0),
            )
            .map_err(dbe)?
            .max(0) as u64;

        self.count_unreported(&conn)?;

        // Event rows at a level that allows none.
        let above_events: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM events e JOIN projects p ON p.id = e.project
                 JOIN strings pr ON pr.id = e.props
                 WHERE p.name = ?1 AND (pr.text LIKE '%\"asked\":\"aggregate\"%'
                                     OR pr.text LIKE '%\"asked\":\"off\"%')",
                [PROJECT],
                |r| r.get(0),
            )
            .map_err(dbe)?;
        self.report.above_tier_rows += above_events.max(0) as u64;

        // Rows left per install pseudonym, and identities.
        let hasher = telemetry_collector::secrets::InstallHasher::load_or_create(
            &self.config.dir.join("pseudonym.key"),
        )
        .map_err(|e| Error::Store(e.to_string()))?;
        let mut rows_by_install: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for table in ["events", "installs", "install_weeks", "identities"] {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT t.install, COUNT(*) FROM {table} t JOIN projects p ON p.id = t.project
                     WHERE p.name = ?1 GROUP BY t.install"
                ))
                .map_err(dbe)?;
            let rows: Vec<(Vec<u8>, i64)> = stmt
                .query_map([PROJECT], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(dbe)?
                .collect::<Result<_, _>>()
                .map_err(dbe)?;
            for (install, n) in rows {
                *rows_by_install.entry(install).or_default() += n.max(0) as u64;
            }
        }
        let identities: Vec<Vec<u8>> = {
            let mut stmt = conn
                .prepare(
                    "SELECT t.install FROM identities t JOIN projects p ON p.id = t.project
                     WHERE p.name = ?1",
                )
                .map_err(dbe)?;
            stmt.query_map([PROJECT], |r| r.get(0))
                .map_err(dbe)?
                .collect::<Result<_, _>>()
                .map_err(dbe)?
        };
        let hash = |id: &Uuid| hasher.hash(PROJECT, id).0.to_vec();
        let mut full_ids = BTreeSet::new();
        let mut all_ids = BTreeSet::new();
        for user in &self.users {
            for ep in &user.epochs {
                for id in &ep.ids {
                    all_ids.insert(*id);
                    if ep.level == Tier::Full {
                        full_ids.insert(hash(id));
                    }
                }
                if ep.ids.len() > 1 {
                    self.report.silent_id_changes += ep.ids.len() as u64 - 1;
                }
            }
        }
        self.report.install_ids_seen = all_ids.len() as u64;
        self.report.above_tier_rows +=
            identities.iter().filter(|h| !full_ids.contains(*h)).count() as u64;

        // Missing and double-counted, by cause.
        let withdrawn: BTreeSet<(usize, usize)> = self
            .users
            .iter()
            .enumerate()
            .flat_map(|(u, user)| {
                user.epochs
                    .iter()
                    .enumerate()
                    .filter(|(_, ep)| ep.withdrawn.is_some())
                    .map(move |(e, _)| (u, e))
            })
            .collect();
        let keys: BTreeSet<_> = self
            .expected
            .keys()
            .chain(counted.keys())
            .cloned()
            .collect();
        for key in keys {
            let want = self.expected.get(&key).copied().unwrap_or(0);
            let got = counted.get(&key).copied().unwrap_or(0);
            let phase = self.config.phase(key.2).name();
            self.report.recorded += want;
            self.report.counted += got.min(want);
            if got > want {
                self.report.double_counted += got - want;
                *self.report.double_by_phase.entry(phase).or_default() += got - want;
                if self.debug_keys.contains(&key) {
                    self.report.sent_from_debug_runs += got - want;
                }
            } else if got < want {
                let short = want - got;
                if withdrawn.contains(&(key.0, key.1)) {
                    self.report.withdrawn_undelivered += short;
                } else {
                    self.report.missing += short;
                    *self.report.missing_by_phase.entry(phase).or_default() += short;
                    *self
                        .report
                        .missing_by_event
                        .entry(key.3.clone())
                        .or_default() += short;
                    let cause = if self.config.manifest_window.contains(&key.2) {
                        format!(
                            "recorded in the manifest window ({})",
                            self.config.phase(key.2).name()
                        )
                    } else if self.config.kill_slots.contains(&key.2) {
                        format!(
                            "recorded in a kill -9 slot ({})",
                            self.config.phase(key.2).name()
                        )
                    } else {
                        format!("recorded in phase {}", self.config.phase(key.2).name())
                    };
                    *self.report.missing_by_cause.entry(cause).or_default() += short;
                }
            }
        }
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                n as f64 * 100.0 / of as f64
            }
        };
        self.report.missing_pct = pct(self.report.missing, self.report.recorded);
        self.report.double_counted_pct = pct(self.report.double_counted, self.report.recorded);

        // Deletions.
        let mut acked: BTreeMap<Uuid, Vec<Duration>> = BTreeMap::new();
        for event in log {
            if let Some(id) = event.delete_id {
                acked.entry(id).or_default().push(event.at);
            }
            let key = format!(
                "{} | {} | {}",
                event.phase,
                if event.path.is_empty() {
                    "-"
                } else {
                    &event.path
                },
                if event.answered == 0 {
                    "no answer".to_owned()
                } else {
                    event.answered.to_string()
                }
            );
            *self.report.proxy_requests.entry(key).or_default() += 1;
        }
        let mut latencies = Vec::new();
        let mut reachable = Vec::new();
        for user in &self.users {
            // An uninstalled user's last withdrawal is the opt-out after
            // which nothing of theirs runs again.
            let last = user.epochs.iter().rposition(|ep| ep.withdrawn.is_some());
            for (e, ep) in user.epochs.iter().enumerate() {
                let Some(w) = &ep.withdrawn else { continue };
                let Some(id) = w.id else { continue };
                self.report.deletions_expected += 1;
                let ack = acked
                    .get(&id)
                    .and_then(|times| times.iter().find(|t| **t + Duration::from_secs(1) >= w.at))
                    .map(|t| t.saturating_sub(w.at).as_secs_f64());
                let left = rows_by_install.get(&hash(&id)).copied().unwrap_or(0);
                let honoured = ack.is_some() && left == 0;
                if ack.is_some() && left > 0 {
                    self.report.deletions_with_rows_left += 1;
                }
                if honoured {
                    self.report.deletions_honoured += 1;
                } else if ack.is_none() && user.uninstalled {
                    self.report.deletions_missed_after_uninstall += 1;
                }
                let undeliverable = user.uninstalled
                    && last == Some(e)
                    && (!w.reachable || w.in_kill_slot)
                    && !honoured;
                if undeliverable {
                    self.report.deletions_undeliverable += 1;
                }
                if let Some(l) = ack {
                    latencies.push(l);
                }
                if w.reachable && !undeliverable {
                    reachable.push(if honoured {
                        ack.unwrap_or(f64::INFINITY)
                    } else {
                        f64::INFINITY
                    });
                }
            }
        }
        self.report.deletions_honoured_pct = pct(
            self.report.deletions_honoured,
            self.report.deletions_expected,
        );
        self.report.deletion_p50_secs = percentile(&mut latencies, 50.0);
        self.report.deletion_p99_secs = percentile(&mut latencies, 99.0);
        self.report.deletions_while_reachable = reachable.len() as u64;
        self.report.deletion_p99_reachable_secs =
            percentile(&mut reachable, 99.0).filter(|p| p.is_finite());
        Ok(())
    }
}

/// The nearest-rank percentile, `None` for no values.
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// Runs `cmd`, killing it after `limit`; stdout is kept.
fn run_bounded(mut cmd: Command, limit: Duration, epoch: Instant) -> Outcome {
    let started = epoch.elapsed();
    let Ok(mut child) = cmd.spawn() else {
        return Outcome {
            started,
            ..Outcome::default()
        };
    };
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stdout {
            use std::io::Read;
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = reader.join().unwrap_or_default();
    Outcome {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        started,
    }
}

/// Sends SIGKILL to `pid` (one process, by id). Returns whether it was sent.
fn sigkill(pid: u32) -> bool {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The drill's detached uploaders alive now.
fn uploaders(marker: &str) -> Vec<u32> {
    crate::linger::alive_with_marker(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(telemetry_client::testing::UPLOADER_MARKER.as_bytes()))
            })
        })
        .collect()
}

/// Until `done`, finds uploaders and SIGKILLs each at a random moment in its
/// first 300 ms.
fn kill_watcher(marker: &str, done: &AtomicBool, killed: &AtomicU64, rng: &mut Rng) {
    let mut due: BTreeMap<u32, Instant> = BTreeMap::new();
    let mut finished = BTreeSet::new();
    let limit = Instant::now() + Duration::from_secs(600);
    while !done.load(Ordering::SeqCst) && Instant::now() < limit {
        for pid in uploaders(marker) {
            if !finished.contains(&pid) {
                due.entry(pid)
                    .or_insert_with(|| Instant::now() + Duration::from_millis(rng.below(300)));
            }
        }
        let now = Instant::now();
        let ripe: Vec<u32> = due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| *p)
            .collect();
        for pid in ripe {
            due.remove(&pid);
            finished.insert(pid);
            // Only if it is still one of ours: the pid may have been reused.
            if uploaders(marker).contains(&pid) && sigkill(pid) {
                killed.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Each look reads every process's environment; not too often.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The drill's collector, in process on the drill's runtime.
struct Collector {
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Collector {
    async fn start(dir: &Path, with_extra: bool) -> Result<Collector, Error> {
        let manifest = if with_extra {
            "manifest-full.toml"
        } else {
            "manifest-lacking.toml"
        };
        let config_text = format!(
            "listen = \"127.0.0.1:0\"\n\
             db = {db:?}\n\
             admin_token = \"{ADMIN_TOKEN}\"\n\
             pseudonym_key_file = {key:?}\n\
             [rate_limit]\nrequests_per_minute = 0\n\
             [cardinality]\nvalues_per_day = 1000000\n\
             [connections]\nmax_per_source = 0\n\
             [[projects]]\nname = \"{PROJECT}\"\nmanifest = \"{manifest}\"\n",
            db = dir.join("collector.db").display().to_string(),
            key = dir.join("pseudonym.key").display().to_string(),
        );
        let path = dir.join("collector.toml");
        std::fs::write(&path, config_text)
            .map_err(|e| Error::io("writing the collector config", e))?;
        let config = telemetry_collector::Config::load(&path)
            .map_err(|e| Error::Drill(format!("collector config: {e}")))?;
        let (state, _) = telemetry_collector::AppState::from_config(&config)
            .map_err(|e| Error::Drill(format!("collector: {e}")))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the collector", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the collector's address", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(telemetry_collector::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Ok(Collector {
            url: format!("http://{addr}"),
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Stops it and waits until every accepted write is committed.
    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_parses_with_and_without_extra() {
        let full = telemetry_protocol::Manifest::parse(&manifest_text(true)).unwrap();
        assert!(full.event(EVENT_EXTRA).is_some());
        let lacking = telemetry_protocol::Manifest::parse(&manifest_text(false)).unwrap();
        assert!(lacking.event(EVENT_EXTRA).is_none());
        assert!(lacking.event(EVENT_COMMAND).is_some());
    }

    #[test]
    fn manifest_windows_and_kills_fall_in_reachable_slots() {
        for config in [
            FleetConfig::short_form("h".into(), "d".into()),
            FleetConfig::long_form("h".into(), "d".into()),
        ] {
            assert!(config.total_slots() <= MAX_SLOTS);
            assert!(config.installs >= 200 && config.days >= 3);
            for slot in config.manifest_window.iter().chain(&config.kill_slots) {
                assert!(*slot < config.fault_slots());
                assert!(config.phase(*slot).reachable(), "slot {slot}");
            }
        }
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v = vec![3.0, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), Some(2.0));
        assert_eq!(percentile(&mut v, 99.0), Some(4.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn targets_fail_on_any_shortfall() {
        let clean = FleetReport {
            deletions_expected: 2,
            deletions_honoured: 2,
            deletions_while_reachable: 1,
            deletion_p99_reachable_secs: Some(1.0),
            ..FleetReport::default()
        };
        assert!(clean.passed(), "{}", clean.markdown());
        let missing = FleetReport {
            missing: 1,
            missing_by_event: [(EVENT_COMMAND.to_owned(), 1)].into(),
            ..clean.clone()
        };
        let failed: Vec<_> = missing
            .targets()
            .into_iter()
            .filter(|t| !t.passed)
            .map(|t| t.name)
            .collect();
        assert_eq!(
            failed,
            [
                "missing == reported dropped",
                "0 missing when no limit was hit"
            ]
        );
    }
}
