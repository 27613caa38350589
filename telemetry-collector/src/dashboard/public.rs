//! The opt-in public page and JSON of a project, the way some package managers
//! publish their install analytics.
//!
//! A project is public only when the collector's configuration says so; every
//! other project answers 404 here, exactly like a project that does not exist,
//! so the public routes do not reveal which projects a collector holds.
//!
//! What is published, and how it is protected:
//! - only aggregate numbers of the last [`PUBLIC_WEEKS`] ISO weeks: new
//!   installs, weekly active installs, setup started and completed, a weekly
//!   series and the version, OS and arch breakdowns of the last whole week.
//!   Never identity fields, install ids, event names or props;
//! - **differential privacy:** every number is computed from the noisy cells
//!   of [`crate::release`], drawn once and kept, never from an exact count.
//!   Totals are sums of their cells and rates are ratios of noisy sums, so
//!   subtracting published numbers yields only noise. There is no all-time
//!   total;
//! - **small-count suppression**, on top: a noisy count below the project's
//!   threshold `k` (default [`DEFAULT_MIN_COUNT`], at least
//!   [`MIN_MIN_COUNT`]) is published as the text `< k`. That is
//!   post-processing of a private number: it costs no privacy and keeps the
//!   page from showing noise around zero as if it were data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use telemetry_protocol::{Day, IsoWeek};

use super::charts;
use super::html::{Chrome, Esc, num, page, pct};
use crate::release::{self, Breakdown, Budget, Daily, Dimension};
use crate::store::ReleasedCell;

/// The default small-count threshold.
pub const DEFAULT_MIN_COUNT: u64 = 10;
/// The smallest threshold the config accepts.
pub const MIN_MIN_COUNT: u64 = 5;
/// How many ISO weeks the public page covers, the current one included.
pub const PUBLIC_WEEKS: i32 = 12;
/// Where the page links for what its guarantee means.
pub const PRIVACY_URL: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/blob/main/PRIVACY.md#public-pages"
);

/// A project's public-page settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublicProject {
    /// Noisy counts below this are published as `< k`.
    pub min_count: u64,
    /// The privacy budget of the published numbers.
    pub budget: Budget,
}

impl Default for PublicProject {
    fn default() -> Self {
        PublicProject {
            min_count: DEFAULT_MIN_COUNT,
            budget: Budget::default(),
        }
    }
}

/// The window the public page shows on `today`: [`PUBLIC_WEEKS`] whole ISO
/// weeks, the current week counted up to today.
pub fn public_window(today: Day) -> (Day, Day) {
    (today.week_start().add_days(-7 * (PUBLIC_WEEKS - 1)), today)
}

/// One published count: a noisy count of at least `k`, or the text `< k`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    /// At least `k`: published as the noisy count.
    Count(u64),
    /// Below `k`: published as `< k`.
    Suppressed(String),
}

impl Cell {
    /// The noisy count `n` as published under threshold `k`.
    pub fn new(n: i64, k: u64) -> Cell {
        match u64::try_from(n) {
            Ok(n) if n >= k => Cell::Count(n),
            _ => Cell::Suppressed(format!("< {k}")),
        }
    }

    /// The cell as page text.
    pub fn text(&self) -> String {
        match self {
            Cell::Count(n) => num(*n),
            Cell::Suppressed(s) => s.clone(),
        }
    }

    /// The count, or zero when suppressed (for drawing only).
    fn drawn(&self) -> u64 {
        match self {
            Cell::Count(n) => *n,
            Cell::Suppressed(_) => 0,
        }
    }
}

/// One week of the public series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicWeek {
    /// The ISO week.
    pub week: IsoWeek,
    /// New installs: the sum of the week's released days.
    pub installs: Cell,
    /// Weekly active installs: the sum of the week's released days.
    pub active_installs: Cell,
    /// How many of its days are released: 7 once the week is over.
    pub days: u32,
}

/// One named row of a public breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicRow {
    /// The version, OS or arch.
    pub key: String,
    /// New installs.
    pub installs: Cell,
    /// Weekly active installs.
    pub active_installs: Cell,
}

/// Everything not in a named row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicOther {
    /// New installs.
    pub installs: Cell,
    /// Weekly active installs.
    pub active_installs: Cell,
}

/// A public breakdown of the last whole week: named rows, then the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicBreakdown {
    /// Rows with a noisy count of at least `k`.
    pub rows: Vec<PublicRow>,
    /// Everything else, if there was anything.
    pub other: Option<PublicOther>,
}

/// How close the published numbers are to the truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// The probability each bound holds.
    pub confidence: f64,
    /// A single cell: a day, or a breakdown row.
    pub cell: u64,
    /// A weekly number: the sum of seven days.
    pub weekly: u64,
    /// A total over the window's days.
    pub window: u64,
}

/// Everything a public page and its JSON publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicStats {
    /// The project name.
    pub project: String,
    /// The first day of the window.
    pub from: Day,
    /// The last day of the window (today; released through yesterday).
    pub to: Day,
    /// The suppression threshold `k`.
    pub min_count: u64,
    /// The privacy loss per week the numbers are released under.
    pub epsilon_per_week: f64,
    /// How close the numbers are to the truth.
    pub accuracy: Accuracy,
    /// New installs in the window: the sum of the weekly numbers.
    pub installs: Cell,
    /// Weekly active installs in the last whole week.
    pub active_installs: Cell,
    /// Setup started in the window.
    pub setup_started: Cell,
    /// Setup completed in the window.
    pub setup_completed: Cell,
    /// Completed over started (noisy sums), published only when both reach `k`.
    pub setup_completion_rate: Option<f64>,
    /// The weekly series.
    pub weekly: Vec<PublicWeek>,
    /// The week the breakdowns and `active_installs` describe: the last whole one.
    pub breakdown_week: IsoWeek,
    /// By version.
    pub versions: PublicBreakdown,
    /// By OS.
    pub os: PublicBreakdown,
    /// By arch.
    pub arch: PublicBreakdown,
}

/// The released cells of one page, indexed.
struct Cells<'a> {
    daily: BTreeMap<(Day, &'a str), i64>,
    rows: BTreeMap<(&'a str, &'a str), i64>,
}

impl<'a> Cells<'a> {
    fn of(cells: &'a [ReleasedCell], breakdown_week: Day) -> Cells<'a> {
        let mut out = Cells {
            daily: BTreeMap::new(),
            rows: BTreeMap::new(),
        };
        let breakdowns: BTreeSet<String> = Breakdown::ALL.iter().map(|b| b.name()).collect();
        for c in cells {
            if breakdowns.contains(&c.statistic) {
                if c.period == breakdown_week && !c.key.is_empty() {
                    out.rows
                        .insert((c.statistic.as_str(), c.key.as_str()), c.value);
                }
            } else if c.key.is_empty() {
                out.daily.insert((c.period, c.statistic.as_str()), c.value);
            }
        }
        out
    }

    /// The sum of the released days of `daily` in `from..=to`, and how many.
    fn sum(&self, daily: Daily, from: Day, to: Day) -> (i64, u32) {
        let mut day = from;
        let (mut sum, mut days) = (0i64, 0u32);
        while day <= to {
            if let Some(v) = self.daily.get(&(day, daily.name())) {
                sum = sum.saturating_add(*v);
                days += 1;
            }
            day = day.add_days(1);
        }
        (sum, days)
    }

    fn row(&self, b: Breakdown, key: &str) -> Option<i64> {
        self.rows.get(&(b.name().as_str(), key)).copied()
    }

    fn keys(&self, b: Breakdown) -> Vec<&'a str> {
        let name = b.name();
        self.rows
            .keys()
            .filter(|(s, _)| *s == name)
            .map(|(_, k)| *k)
            .collect()
    }
}

fn breakdown(
    cells: &Cells<'_>,
    dimension: Dimension,
    totals: (i64, i64),
    k: u64,
    version_threshold: i64,
) -> PublicBreakdown {
    let installs = Breakdown {
        dimension,
        count: Daily::Installs,
    };
    let active = Breakdown {
        dimension,
        count: Daily::Active,
    };
    let mut keys: BTreeSet<&str> = cells.keys(installs).into_iter().collect();
    keys.extend(cells.keys(active));
    let big = |n: Option<i64>| n.is_some_and(|n| n >= k as i64);
    let mut named: Vec<(&str, Option<i64>, Option<i64>)> = keys
        .into_iter()
        .filter(|key| *key != release::OTHER)
        .map(|key| (key, cells.row(installs, key), cells.row(active, key)))
        .filter(|(_, i, a)| big(*i) || big(*a))
        .collect();
    named.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| b.2.cmp(&a.2))
            .then_with(|| a.0.cmp(b.0))
    });
    // A version the threshold mechanism left out is below its threshold.
    let missing = match dimension {
        Dimension::Version => Cell::Suppressed(format!("< {version_threshold}")),
        _ => Cell::Suppressed(format!("< {k}")),
    };
    let cell = |n: Option<i64>| n.map_or_else(|| missing.clone(), |n| Cell::new(n, k));
    // Everything else is the week's total less what the named rows show:
    // post-processing of noisy numbers, so it too is only noisy.
    let shown_installs: i64 = named.iter().filter_map(|r| r.1).sum();
    let shown_active: i64 = named.iter().filter_map(|r| r.2).sum();
    let rest = (totals.0 - shown_installs, totals.1 - shown_active);
    let other = (rest.0 > 0 || rest.1 > 0 || named.is_empty()).then(|| PublicOther {
        installs: Cell::new(rest.0, k),
        active_installs: Cell::new(rest.1, k),
    });
    PublicBreakdown {
        rows: named
            .iter()
            .map(|(key, i, a)| PublicRow {
                key: (*key).to_owned(),
                installs: cell(*i),
                active_installs: cell(*a),
            })
            .collect(),
        other,
    }
}

impl PublicStats {
    /// The public numbers of `project` on `today`, computed only from the
    /// released `cells` (see [`release::release`]).
    pub fn from_released(
        project: &str,
        today: Day,
        settings: &PublicProject,
        version_threshold: i64,
        cells: &[ReleasedCell],
    ) -> PublicStats {
        let k = settings.min_count;
        let (from, to) = public_window(today);
        let last_week = today.week_start().add_days(-7);
        let index = Cells::of(cells, last_week);
        let window = |d: Daily| index.sum(d, from, to).0;
        let week = |d: Daily, monday: Day| index.sum(d, monday, monday.add_days(6));
        let (started, completed) = (window(Daily::SetupStarted), window(Daily::SetupCompleted));
        let rate = (started >= k as i64 && completed >= k as i64)
            .then(|| (completed as f64 / started as f64).clamp(0.0, 1.0));
        let mut weekly = Vec::new();
        let mut monday = from;
        while monday <= to {
            let (installs, days) = week(Daily::Installs, monday);
            weekly.push(PublicWeek {
                week: monday.iso_week(),
                installs: Cell::new(installs, k),
                active_installs: Cell::new(week(Daily::Active, monday).0, k),
                days,
            });
            monday = monday.add_days(7);
        }
        let totals = (
            week(Daily::Installs, last_week).0,
            week(Daily::Active, last_week).0,
        );
        let budget = settings.budget;
        PublicStats {
            project: project.to_owned(),
            from,
            to,
            min_count: k,
            epsilon_per_week: budget.epsilon_per_week,
            accuracy: Accuracy {
                confidence: release::CONFIDENCE,
                cell: budget.accuracy(1),
                weekly: budget.accuracy(7),
                window: budget.accuracy(7 * PUBLIC_WEEKS as u32),
            },
            installs: Cell::new(window(Daily::Installs), k),
            active_installs: Cell::new(totals.1, k),
            setup_started: Cell::new(started, k),
            setup_completed: Cell::new(completed, k),
            setup_completion_rate: rate,
            weekly,
            breakdown_week: last_week.iso_week(),
            versions: breakdown(&index, Dimension::Version, totals, k, version_threshold),
            os: breakdown(&index, Dimension::Os, totals, k, version_threshold),
            arch: breakdown(&index, Dimension::Arch, totals, k, version_threshold),
        }
    }
}

fn breakdown_table(out: &mut String, id: &str, title: &str, b: &PublicBreakdown) {
    let _ = write!(
        out,
        "<section class=\"breakdown\" id=\"{id}\"><h3>{title}</h3><div class=\"table-scroll\"><table>\
         <thead><tr><th scope=\"col\">{title}</th><th scope=\"col\" class=\"n\">New installs</th>\
         <th scope=\"col\" class=\"n\">Weekly active installs</th></tr></thead><tbody>"
    );
    for row in &b.rows {
        let _ = write!(
            out,
            "<tr><td class=\"key\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            Esc(&row.key),
            row.installs.text(),
            row.active_installs.text()
        );
    }
    if let Some(other) = &b.other {
        let _ = write!(
            out,
            "<tr><td class=\"key other\">all others</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            other.installs.text(),
            other.active_installs.text()
        );
    }
    if b.rows.is_empty() && b.other.is_none() {
        out.push_str("<tr><td colspan=\"3\">No data yet.</td></tr>");
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// The public page.
pub fn render_public(p: &PublicStats) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1 id=\"project-name\">{}</h1>\n<p class=\"sub\">Public usage numbers, {} to {} (UTC), \
         released through yesterday. Counts below {k} are shown as <q>&lt; {k}</q>.</p>\n\
         <p class=\"note\" id=\"noise-line\">Each weekly number is within ±{weekly} of the truth \
         {conf:.0}% of the time (12-week totals: ±{window}): noise is added so that no one install \
         can be told apart (differential privacy, ε = {eps} per week). \
         <a href=\"{url}\">What this means</a></p>\n<section class=\"kpis\">\n",
        Esc(&p.project),
        p.from,
        p.to,
        k = p.min_count,
        weekly = num(p.accuracy.weekly),
        window = num(p.accuracy.window),
        conf = p.accuracy.confidence * 100.0,
        eps = p.epsilon_per_week,
        url = Esc(PRIVACY_URL),
    );
    let active_label = format!("Weekly active installs, {}", p.breakdown_week);
    for (id, label, value) in [
        ("stat-installs", "New installs, 12 weeks", p.installs.text()),
        (
            "stat-active",
            active_label.as_str(),
            p.active_installs.text(),
        ),
        (
            "stat-completion",
            "Setup completion",
            pct(p.setup_completion_rate),
        ),
    ] {
        let _ = writeln!(
            body,
            "<div class=\"kpi\"><div class=\"kpi-label\">{label}</div><div class=\"kpi-value\" id=\"{id}\">{}</div></div>",
            Esc(&value)
        );
    }
    body.push_str("</section>\n");
    let x: Vec<String> = p
        .weekly
        .iter()
        .map(|w| format!("W{:02}", w.week.week))
        .collect();
    let full: Vec<String> = p.weekly.iter().map(|w| w.week.to_string()).collect();
    let installs: Vec<u64> = p.weekly.iter().map(|w| w.installs.drawn()).collect();
    let active: Vec<u64> = p.weekly.iter().map(|w| w.active_installs.drawn()).collect();
    body.push_str(&charts::weekly_installs(&x, &full, &installs, &active));
    let _ = write!(
        body,
        "<p class=\"note\">Weeks below {} are drawn at zero; the table gives each week. \
         The current week counts the days released so far.</p>\n\
         <details><summary>Weekly numbers</summary><div class=\"table-scroll\"><table><thead><tr>\
         <th scope=\"col\">Week</th><th scope=\"col\" class=\"n\">New installs</th>\
         <th scope=\"col\" class=\"n\">Weekly active installs</th><th scope=\"col\" class=\"n\">Days</th></tr></thead><tbody>",
        p.min_count
    );
    for w in &p.weekly {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            w.week,
            w.installs.text(),
            w.active_installs.text(),
            w.days
        );
    }
    let _ = write!(
        body,
        "</tbody></table></div></details>\n<p class=\"note\">Breakdowns of {}.</p>\n<div class=\"cols\">\n",
        p.breakdown_week
    );
    breakdown_table(&mut body, "versions", "Version", &p.versions);
    breakdown_table(&mut body, "os", "OS", &p.os);
    breakdown_table(&mut body, "arch", "Arch", &p.arch);
    body.push_str("</div>\n");
    page(&p.project, Chrome::Plain, &body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dashboard::pages::tests::{HOSTILE, assert_escaped};

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    /// A Saturday: the window starts on Monday 2026-08-31, the last whole
    /// week is 2026-11-09 to 2026-11-15.
    pub(crate) fn today() -> Day {
        day("2026-11-21")
    }

    fn cell(period: Day, statistic: &str, key: &str, value: i64) -> ReleasedCell {
        ReleasedCell {
            project: "demo-cli".into(),
            period,
            statistic: statistic.into(),
            key: key.into(),
            value,
            epsilon: 0.1,
            released_on: today(),
        }
    }

    /// Released cells as `crate::release` would keep them for [`today`]:
    /// every day of the window through yesterday, and last week's breakdowns.
    pub(crate) fn sample_cells() -> Vec<ReleasedCell> {
        let (from, _) = public_window(today());
        let mut cells = Vec::new();
        let mut d = from;
        let mut i = 0;
        while d < today() {
            cells.push(cell(d, "installs", "", 2 + i % 3));
            cells.push(cell(d, "active", "", 5 + i % 4));
            cells.push(cell(d, "setup_started", "", 2));
            cells.push(cell(d, "setup_completed", "", 1 - i % 2));
            d = d.add_days(1);
            i += 1;
        }
        let week = today().week_start().add_days(-7);
        for b in Breakdown::ALL {
            cells.push(cell(week, &b.name(), "", 0));
        }
        cells.push(cell(week, "version.installs", HOSTILE[1], 12));
        cells.push(cell(week, "version.active", "1.2.0", 30));
        cells.push(cell(week, "os.installs", "linux", 11));
        cells.push(cell(week, "os.installs", "macos", 3));
        cells.push(cell(week, "os.installs", "freebsd", -2));
        cells.push(cell(week, "os.installs", "other", 4));
        cells.push(cell(week, "os.active", "linux", 20));
        cells.push(cell(week, "os.active", "macos", 9));
        cells.push(cell(week, "arch.installs", "x86_64", 2));
        cells
    }

    pub(crate) fn sample_public() -> PublicStats {
        PublicStats::from_released(
            "demo-cli",
            today(),
            &PublicProject::default(),
            crate::release::Noise::new(Budget::default(), DEFAULT_MIN_COUNT)
                .unwrap()
                .version_threshold(),
            &sample_cells(),
        )
    }

    #[test]
    fn cells_below_k_are_suppressed() {
        let table = [
            (0, 10, "\"< 10\""),
            (-3, 10, "\"< 10\""),
            (9, 10, "\"< 10\""),
            (10, 10, "10"),
            (4, 5, "\"< 5\""),
            (5, 5, "5"),
        ];
        for (n, k, json) in table {
            assert_eq!(serde_json::to_string(&Cell::new(n, k)).unwrap(), json);
        }
        assert_eq!(Cell::new(3, 10).text(), "< 10");
        assert_eq!(Cell::new(1234, 10).text(), "1,234");
    }

    #[test]
    fn every_number_is_a_sum_of_released_cells() {
        let cells = sample_cells();
        let p = sample_public();
        let sum = |statistic: &str, from: Day, to: Day| -> i64 {
            cells
                .iter()
                .filter(|c| c.statistic == statistic && c.period >= from && c.period <= to)
                .map(|c| c.value)
                .sum()
        };
        let (from, to) = public_window(today());
        assert_eq!(p.installs, Cell::new(sum("installs", from, to), 10));
        assert_eq!(
            p.setup_started,
            Cell::new(sum("setup_started", from, to), 10)
        );
        let last = today().week_start().add_days(-7);
        assert_eq!(
            p.active_installs,
            Cell::new(sum("active", last, last.add_days(6)), 10)
        );
        assert_eq!(p.breakdown_week.to_string(), "2026-W46");
        assert_eq!(p.weekly.len(), 12);
        assert!(p.weekly[..11].iter().all(|w| w.days == 7));
        assert_eq!(p.weekly[11].days, 5, "Monday to Friday of the current week");
        let week_installs: i64 = (0..7)
            .map(|d| sum("installs", last.add_days(d), last.add_days(d)))
            .sum();
        assert_eq!(p.weekly[10].installs, Cell::new(week_installs, 10));
        let rate = sum("setup_completed", from, to) as f64 / sum("setup_started", from, to) as f64;
        assert_eq!(p.setup_completion_rate, Some(rate));

        // Named rows reach k; everything else is the week's total less them.
        assert_eq!(p.os.rows.len(), 1);
        assert_eq!(p.os.rows[0].key, "linux");
        assert_eq!(p.os.rows[0].installs, Cell::Count(11));
        assert_eq!(p.os.rows[0].active_installs, Cell::Count(20));
        let other = p.os.other.as_ref().unwrap();
        assert_eq!(other.installs, Cell::new(week_installs - 11, 10));
        // Versions the threshold left out show as below the threshold.
        assert_eq!(p.versions.rows.len(), 2);
        let v = p.versions.rows.iter().find(|r| r.key == "1.2.0").unwrap();
        assert!(matches!(&v.installs, Cell::Suppressed(s) if s.starts_with("< 1")));
        assert_eq!(v.active_installs, Cell::Count(30));
        assert!(p.arch.rows.is_empty(), "x86_64 has 2 < k");

        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("installs_all_time").is_none(), "no all-time total");
        assert_eq!(json["accuracy"]["weekly"], p.accuracy.weekly);
        assert_eq!(json["epsilon_per_week"], 1.0);
    }

    #[test]
    fn public_page_states_the_accuracy_and_escapes_keys() {
        let p = sample_public();
        let html = render_public(&p);
        assert_escaped(&html);
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "a named version row"
        );
        assert!(!html.contains("Sign out"));
        assert!(!html.contains("all time"));
        let line = format!(
            "Each weekly number is within ±{} of the truth 95% of the time",
            p.accuracy.weekly
        );
        assert!(html.contains(&line), "{line}");
        assert!(html.contains(&format!("href=\"{PRIVACY_URL}\"")));
        assert!(PRIVACY_URL.ends_with("PRIVACY.md#public-pages"));
        assert!(html.contains(&format!("id=\"stat-installs\">{}</div>", p.installs.text())));
        assert!(html.contains("Counts below 10 are shown as"));
    }

    #[test]
    fn the_public_window_is_whole_weeks() {
        let (from, to) = public_window(today());
        assert_eq!(from.to_string(), "2026-08-31");
        assert_eq!(from.iso_weekday(), 1);
        assert_eq!(to, today());
    }
}
