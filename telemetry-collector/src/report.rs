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
    /// How each declared prop's values split, per event (see [`PropBreakdown`]).
    #[serde(default)]
    pub props: Vec<PropBreakdown>,
    /// The weekly share of active installs by tool version.
    #[serde(default)]
    pub adoption: VersionAdoption,
    /// Each non-lifecycle event's use over time.
    #[serde(default)]
    pub commands: Vec<CommandUsage>,
    /// What is known to be missing: dropped by clients, refused or downgraded here.
    #[serde(default)]
    pub delivery: DeliveryHealth,
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
    /// Distinct installs that sent anything in the week at `anonymous` or
    /// `full` (aggregate data carries no install, so it is not in here).
    #[serde(default)]
    pub identified_installs: u64,
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

// Prop breakdowns, version adoption and command usage. Like everything
// above, their counts come from the daily counters: every tier contributes
// and raw events are never read. Counters count events, not installs; the
// *distinct installs* beside them come from `weekly_uses`, kept at ingest
// for data sent at `anonymous` or `full` (see `store::UseRow`), per ISO
// week: distinct over a week, not over a longer window.

/// The label of the row that folds the long tail (and any value the
/// collector's cardinality caps already folded).
pub const OTHER: &str = crate::cardinality::OTHER;

/// How one prop of one event split over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropBreakdown {
    /// The event name, exactly as stored (escape before display).
    pub event: String,
    /// The prop name, exactly as stored (escape before display).
    pub prop: String,
    /// The prop's declared kind: `enum`, `bool`, `bucket` or `version`, or
    /// `undeclared` for a prop no configured manifest names.
    pub kind: String,
    /// Events of `event` in the window, with or without this prop.
    pub events: u64,
    /// Events of `event` in the window that did not carry this prop.
    pub not_set: u64,
    /// Distinct installs that sent `event` in the ISO week of `to` (whole
    /// week up to `to`), at `anonymous` or `full`; `None` when no install
    /// sent anything at those tiers that week.
    #[serde(default)]
    pub installs: Option<u64>,
    /// One row per value, in the kind's order: enums and undeclared props by
    /// count (most first), booleans `true` then `false`, buckets in bucket
    /// order, versions in semver order (oldest first). Past the top values,
    /// the rest is folded into one [`OTHER`] row, always last.
    pub values: Vec<ValueCount>,
    /// How many distinct values the [`OTHER`] row folds (0 without one).
    pub folded: u64,
    /// The ISO weeks of `series`, oldest first; edge weeks count only days in the window.
    pub weeks: Vec<IsoWeek>,
    /// Weekly counts of the top values, in the order of `values`, plus an
    /// [`OTHER`] series for everything else when there is anything else.
    pub series: Vec<ValueSeries>,
}

/// One value of a [`PropBreakdown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueCount {
    /// The value as sent (`true`/`false` for booleans, the bucket label for
    /// buckets); escape before display.
    pub value: String,
    /// Events with this value in the window.
    pub count: u64,
    /// `count` over the events that carried the prop, or `None` when none did.
    pub share: Option<f64>,
    /// Distinct installs that sent this value in the ISO week of `to`, at
    /// `anonymous` or `full`. `None` for [`OTHER`] (an install may have sent
    /// several of the values it folds) and when no install sent anything at
    /// those tiers that week.
    #[serde(default)]
    pub installs: Option<u64>,
    /// `installs` over the breakdown's `installs`, `None` without either.
    #[serde(default)]
    pub install_share: Option<f64>,
}

/// One value's weekly counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueSeries {
    /// The value, or [`OTHER`].
    pub value: String,
    /// One count per week of the breakdown's `weeks`.
    pub counts: Vec<u64>,
    /// Distinct installs per week (`anonymous` and `full`), `None` for [`OTHER`].
    #[serde(default)]
    pub installs: Option<Vec<u64>>,
}

/// The weekly share of active installs by tool version. Every install sends
/// `active` once per ISO week at any tier, so a week's `active` count by
/// version is its distinct active installs by version, with no identifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionAdoption {
    /// The ISO weeks overlapping the window, oldest first (whole weeks, as in `weekly`).
    pub weeks: Vec<IsoWeek>,
    /// Active installs of each week, all versions.
    pub active_installs: Vec<u64>,
    /// One series per version in semver order (oldest first), the most active
    /// versions only; the rest folded into an [`OTHER`] series, last.
    pub versions: Vec<AdoptionSeries>,
    /// How many versions the [`OTHER`] series folds (0 without one).
    pub folded: u64,
}

/// One version's weekly active installs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdoptionSeries {
    /// The tool version as sent (escape before display), or [`OTHER`].
    pub version: String,
    /// Active installs per week.
    pub active_installs: Vec<u64>,
    /// `active_installs` over the week's total, `None` for a week without any.
    pub share: Vec<Option<f64>>,
}

/// One event's use over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandUsage {
    /// The event name, exactly as stored (escape before display).
    pub event: String,
    /// Events in the window.
    pub count: u64,
    /// Events per ISO week of `weekly` (edge weeks count only days in the window).
    pub weekly: Vec<u64>,
    /// Events per weekly active install in the window's last week: `count` of
    /// that week over its `active` count. Not a share of installs (one install
    /// may send many), which counters cannot give; `None` without actives.
    pub per_active_install: Option<f64>,
    /// Distinct installs that sent the event in the window's last ISO week,
    /// at `anonymous` or `full`; `None` when none sent anything at those
    /// tiers that week.
    #[serde(default)]
    pub installs: Option<u64>,
    /// **The share of active installs that used it**: `installs` over the
    /// installs that sent anything that week at `anonymous` or `full`
    /// (`weekly[].identified_installs` of that week). Aggregate data has no
    /// installs, so it is not in either number.
    #[serde(default)]
    pub install_share: Option<f64>,
    /// Distinct installs per ISO week of `weekly` (`anonymous` and `full`).
    #[serde(default)]
    pub weekly_installs: Vec<u64>,
}

/// One event's prop breakdowns, as `telemetry-collector stats --event E` prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBreakdown {
    /// The project.
    pub project: String,
    /// The first day of the window.
    pub from: Day,
    /// The last day of the window, inclusive.
    pub to: Day,
    /// The event.
    pub event: String,
    /// Events of `event` in the window.
    pub count: u64,
    /// One breakdown per prop (only the one asked for with `--prop`).
    pub props: Vec<PropBreakdown>,
}

/// What each field of the stats JSON means, for `telemetry-collector stats
/// --help` (docs/api.md says the same at length, with an example).
pub const FIELDS_HELP: &str = "\
JSON fields (--format json; the same as GET /api/v1/projects/P/stats):
  project, from, to          the project and the window of UTC days, inclusive
  installs                   `install` events in the window: new installs
  installs_all_time          `install` events ever
  active_installs            weekly active installs: `active` events in the ISO week of `to`
  setup_started, setup_completed, setup_completion_rate
                             setup events in the window; completed / started (null if none)
  daily[]                    per day: day, installs, active, setup_started, setup_completed,
                             events (all events and counter increments)
  weekly[]                   per ISO week: week, installs, active_installs, setup_started,
                             setup_completed, identified_installs (distinct installs that sent
                             anything that week at anonymous/full)
  versions[], os[], arch[]   key, installs (in the window), active_installs (week of `to`)
  tiers[]                    tier, events received at that tier in the window
  events[]                   event, count: every event's total in the window
  retention[]                week, installs, retained[n] (active n weeks later); anonymous/full only
  props[]                    per event and prop: event, prop, kind (enum|bool|bucket|version|
                             undeclared), events (of the event), not_set (without the prop),
                             installs (distinct installs that sent the event in the week of
                             `to`, anonymous/full; null if none at those tiers), values[] {value,
                             count, share (of events with the prop), installs (distinct, week of
                             `to`; null for \"(other)\"), install_share (of the event's installs)}
                             in the kind's order with the tail folded into \"(other)\", folded
                             (values in \"(other)\"), weeks[], series[] {value, counts[] per
                             week, installs[] per week (null for \"(other)\")}
  adoption                   weeks[], active_installs[] per week, versions[] {version,
                             active_installs[], share[]} in semver order, \"(other)\" last,
                             folded (versions in \"(other)\")
  commands[]                 event, count, weekly[] (per week of `weekly`), per_active_install
                             (last week's count / its active installs), installs (distinct
                             installs that sent it in the week of `to`, anonymous/full),
                             install_share (installs / identified_installs of that week: the
                             share of active installs that used it), weekly_installs[]
  delivery                   summary (one sentence about the week of `to`), week, week_received,
                             week_missing, week_missing_share, received, missing, missing_share
                             (in the window), dropped[] {reason, count} and dropped_by_version[]
                             {version, count} (telemetry_dropped counters), refused[],
                             downgraded[], ignored[] {reason, version, count, details[]},
                             uploads, retries (uploads carrying items already stored: sent
                             again after a lost answer), retry_share, replayed (items those
                             retries carried again, counted once), week_uploads, week_retries,
                             week_retry_share (the same for the week of the summary)
With --event E (and --prop K): project, from, to, event, count (events of E), props[] as above.
Counts come from the daily counters, so every tier contributes. Distinct installs come from
weekly_uses, kept at ingest for anonymous/full data, and are distinct within one ISO week
(they do not add up over weeks). See docs/api.md.";

/// Delivery health: what is known to be missing or changed on the way, so a
/// maintainer sees a pipeline problem before drawing conclusions from the
/// numbers. From the `telemetry_dropped` counters clients send and the
/// collector's own `refusals` table; neither holds an install id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryHealth {
    /// One plain sentence about the ISO week of `to`, such as "About 0.4% of
    /// events are known to be missing this week (...)".
    pub summary: String,
    /// The ISO week the summary is about.
    pub week: Option<IsoWeek>,
    /// That week: events and counter increments stored (delivery health's own excluded).
    pub week_received: u64,
    /// That week: items known to be missing (see `missing`).
    pub week_missing: u64,
    /// `week_missing / (week_received + week_missing)`, `None` without either.
    pub week_missing_share: Option<f64>,
    /// In the window: events and counter increments stored (delivery health's own excluded).
    pub received: u64,
    /// In the window: items known to be missing: what clients dropped for any
    /// reason but `refused_items` (the collector counts those itself, in
    /// `refused`), plus what the collector refused.
    pub missing: u64,
    /// `missing / (received + missing)`, `None` without either.
    pub missing_share: Option<f64>,
    /// Items clients reported dropping in the window, by reason (every
    /// reason listed, most first), from `telemetry_dropped` counters.
    pub dropped: Vec<ReasonCount>,
    /// The same counts by the tool version that reported them, most first.
    pub dropped_by_version: Vec<VersionCount>,
    /// Items the collector refused in the window, by reason and tool version, most first.
    pub refused: Vec<RefusalCount>,
    /// Items stored at a lower tier than sent (`downgraded_*`), by reason and version.
    pub downgraded: Vec<RefusalCount>,
    /// Unknown fields ignored (`ignored_field`), by reason and version.
    pub ignored: Vec<RefusalCount>,
    /// Uploads (ingest requests stored) that arrived in the window.
    #[serde(default)]
    pub uploads: u64,
    /// Of those, **retries**: uploads carrying events or reports already
    /// stored, sent again by a client that never saw the first answer (see
    /// [`crate::store::UploadRow`]); their replayed items counted once.
    #[serde(default)]
    pub retries: u64,
    /// `retries / uploads`, `None` without uploads.
    #[serde(default)]
    pub retry_share: Option<f64>,
    /// Items the retries carried that were already stored (not counted again).
    #[serde(default)]
    pub replayed: u64,
    /// Uploads in the ISO week of the summary.
    #[serde(default)]
    pub week_uploads: u64,
    /// Retries in that week.
    #[serde(default)]
    pub week_retries: u64,
    /// `week_retries / week_uploads`, `None` without uploads.
    #[serde(default)]
    pub week_retry_share: Option<f64>,
}

/// A count for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// The reason.
    pub reason: String,
    /// How many items.
    pub count: u64,
}

/// A count for one tool version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    /// The tool version as sent (escape before display).
    pub version: String,
    /// How many items.
    pub count: u64,
}

/// A count of refused, downgraded or ignored items for one reason and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    /// The reason: a violation code such as `unknown_event`, `downgraded_*` or `ignored_field`.
    pub reason: String,
    /// The tool version that sent the items (escape before display).
    pub version: String,
    /// How many items.
    pub count: u64,
    /// The most frequent details (what was refused, e.g. `command.name=deploy`), at most five.
    pub details: Vec<String>,
}
