//! The stats report: the one set of numbers that `telemetry-collector stats`,
//! the JSON API, the CSV exports and the dashboard all show.
//!
//! Storage computes a [`ProjectStats`] (see `stats`); every presentation only
//! formats it. Keeping the numbers in one type is what guarantees that the page,
//! the JSON and the terminal agree.
//!
//! Every count here comes from the daily counters, which every tier rolls up
//! into, so deletions and install-id resets never change them. The only
//! exception is [`ProjectStats::retention`], which needs per-install activity
//! and therefore exists only for data sent at `anonymous` or `full`.

use serde::{Deserialize, Serialize};
use telemetry_protocol::{Day, IsoWeek, Tier};

/// Everything shown about one project over an inclusive window of UTC days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectStats {
    /// The project name.
    pub project: String,
    /// The first day of the window.
    pub from: Day,
    /// The last day of the window, inclusive.
    pub to: Day,
    /// `install` events in the window: new installs.
    pub installs: u64,
    /// `install` events ever, regardless of the window.
    pub installs_all_time: u64,
    /// Weekly active installs: `active` events in the last ISO week that
    /// overlaps the window. Each install sends `active` once per week, at any
    /// tier, so this counts distinct installs without an identifier.
    pub active_installs: u64,
    /// `setup_started` events in the window.
    pub setup_started: u64,
    /// `setup_completed` events in the window.
    pub setup_completed: u64,
    /// `setup_completed / setup_started`, or `None` when nothing started.
    pub setup_completion_rate: Option<f64>,
    /// One point per day of the window, oldest first, days without data included as zeros.
    pub daily: Vec<DailyPoint>,
    /// One point per ISO week overlapping the window, oldest first.
    pub weekly: Vec<WeeklyPoint>,
    /// Installs and weekly actives by tool version, most installs first.
    pub versions: Vec<Breakdown>,
    /// Installs and weekly actives by OS, most installs first.
    pub os: Vec<Breakdown>,
    /// Installs and weekly actives by CPU architecture, most installs first.
    pub arch: Vec<Breakdown>,
    /// How much data arrived at each tier in the window.
    pub tiers: Vec<TierShare>,
    /// Every event's total in the window, most frequent first.
    pub events: Vec<EventTotal>,
    /// Retention by install-week cohort, from `anonymous` and `full` data only.
    pub retention: Vec<Cohort>,
}

/// The lifecycle numbers of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyPoint {
    /// The UTC day.
    pub day: Day,
    /// `install` events.
    pub installs: u64,
    /// `active` events (first use in an ISO week).
    pub active: u64,
    /// `setup_started` events.
    pub setup_started: u64,
    /// `setup_completed` events.
    pub setup_completed: u64,
    /// All events and counter increments, lifecycle included.
    pub events: u64,
}

/// The lifecycle numbers of one ISO week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyPoint {
    /// The ISO week.
    pub week: IsoWeek,
    /// `install` events in the week.
    pub installs: u64,
    /// Weekly active installs: `active` events in the week.
    pub active_installs: u64,
    /// `setup_started` events in the week.
    pub setup_started: u64,
    /// `setup_completed` events in the week.
    pub setup_completed: u64,
}

/// One row of a version, OS or arch breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    /// The version, OS or arch, exactly as the client sent it (escape before display).
    pub key: String,
    /// `install` events with this key in the window.
    pub installs: u64,
    /// `active` events with this key in the last week overlapping the window.
    pub active_installs: u64,
}

/// How much data arrived at one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierShare {
    /// The tier.
    pub tier: Tier,
    /// Events or counter increments received at this tier in the window.
    pub events: u64,
}

/// One event's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTotal {
    /// The event name, exactly as stored (escape before display).
    pub event: String,
    /// Events or counter increments in the window.
    pub count: u64,
}

/// One install-week cohort of the retention table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    /// The ISO week the installs were first seen in.
    pub week: IsoWeek,
    /// Installs first seen that week (at `anonymous` or `full`).
    pub installs: u64,
    /// `retained[n]`: how many of them were active `n` weeks later; `retained[0] == installs`.
    pub retained: Vec<u64>,
}
