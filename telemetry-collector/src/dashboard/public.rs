//! The opt-in public page and JSON of a project, the way some package managers
//! publish their install analytics.
//!
//! A project is public only when the collector's configuration says so; every
//! other project answers 404 here, exactly like a project that does not exist,
//! so the public routes do not reveal which projects a collector holds.
//!
//! What is published, and how it is protected:
//! - only aggregate numbers of the last [`PUBLIC_WEEKS`] ISO weeks: installs,
//!   weekly active installs, setup started and completed, a weekly series and
//!   the version, OS and arch breakdowns. Never identity fields, install ids,
//!   event names or props;
//! - **small-count suppression:** every count below the project's threshold
//!   `k` (default [`DEFAULT_MIN_COUNT`]) is published as the text `< k`, in the
//!   page and in the JSON alike. A breakdown row is named only when one of its
//!   counts reaches `k`; the others are summed into one `other` row, itself
//!   suppressed when small. The completion rate is published only when both
//!   of its counts reach `k`, since the rate and one exact count would reveal
//!   the other.
//!
//! Suppression hides small cells; it does not defend against someone
//! differencing totals over overlapping windows. The fixed weekly window
//! keeps that surface small.

use std::fmt::Write as _;

use serde::Serialize;
use telemetry_protocol::Day;

use super::charts;
use super::html::{Chrome, Esc, num, page, pct};
use crate::report::{Breakdown, ProjectStats};

/// The default small-count threshold.
pub const DEFAULT_MIN_COUNT: u64 = 10;
/// How many ISO weeks the public page covers, the current one included.
pub const PUBLIC_WEEKS: i32 = 12;

/// A project's public-page settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicProject {
    /// Counts below this are published as `< k`.
    pub min_count: u64,
}

impl Default for PublicProject {
    fn default() -> Self {
        PublicProject {
            min_count: DEFAULT_MIN_COUNT,
        }
    }
}

/// The window the public page shows on `today`: [`PUBLIC_WEEKS`] whole ISO
/// weeks, the current week counted up to today.
pub fn public_window(today: Day) -> (Day, Day) {
    (today.week_start().add_days(-7 * (PUBLIC_WEEKS - 1)), today)
}

/// One published count: exact, or the text `< k`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    /// At least `k`: published exactly.
    Count(u64),
    /// Below `k`: published as `< k`.
    Suppressed(String),
}

impl Cell {
    /// `n` as published under threshold `k`.
    pub fn new(n: u64, k: u64) -> Cell {
        if n < k {
            Cell::Suppressed(format!("< {k}"))
        } else {
            Cell::Count(n)
        }
    }

    /// The cell as page text.
    pub fn text(&self) -> String {
        match self {
            Cell::Count(n) => num(*n),
            Cell::Suppressed(s) => s.clone(),
        }
    }

    /// The exact value, or zero when suppressed (for drawing only).
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
    pub week: telemetry_protocol::IsoWeek,
    /// New installs.
    pub installs: Cell,
    /// Weekly active installs.
    pub active_installs: Cell,
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

/// The rows whose counts were all below `k`, summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicOther {
    /// New installs.
    pub installs: Cell,
    /// Weekly active installs.
    pub active_installs: Cell,
}

/// A public breakdown: named rows, then the rest folded together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicBreakdown {
    /// Rows with at least one count of `k` or more.
    pub rows: Vec<PublicRow>,
    /// Everything else, if there was anything.
    pub other: Option<PublicOther>,
}

/// Everything a public page and its JSON publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicStats {
    /// The project name.
    pub project: String,
    /// The first day of the window.
    pub from: Day,
    /// The last day of the window.
    pub to: Day,
    /// The suppression threshold `k`.
    pub min_count: u64,
    /// New installs in the window.
    pub installs: Cell,
    /// Installs of all time.
    pub installs_all_time: Cell,
    /// Weekly active installs in the last week of the window.
    pub active_installs: Cell,
    /// Setup started in the window.
    pub setup_started: Cell,
    /// Setup completed in the window.
    pub setup_completed: Cell,
    /// Completed over started, published only when both reach `k`.
    pub setup_completion_rate: Option<f64>,
    /// The weekly series.
    pub weekly: Vec<PublicWeek>,
    /// By version.
    pub versions: PublicBreakdown,
    /// By OS.
    pub os: PublicBreakdown,
    /// By arch.
    pub arch: PublicBreakdown,
}

fn fold(rows: &[Breakdown], k: u64) -> PublicBreakdown {
    let (named, rest): (Vec<&Breakdown>, Vec<&Breakdown>) = rows
        .iter()
        .partition(|b| b.installs >= k || b.active_installs >= k);
    let other = (!rest.is_empty()).then(|| PublicOther {
        installs: Cell::new(rest.iter().map(|b| b.installs).sum(), k),
        active_installs: Cell::new(rest.iter().map(|b| b.active_installs).sum(), k),
    });
    PublicBreakdown {
        rows: named
            .into_iter()
            .map(|b| PublicRow {
                key: b.key.clone(),
                installs: Cell::new(b.installs, k),
                active_installs: Cell::new(b.active_installs, k),
            })
            .collect(),
        other,
    }
}

impl PublicStats {
    /// Applies suppression with threshold `k` to `stats`.
    pub fn from_stats(stats: &ProjectStats, k: u64) -> PublicStats {
        let rate = if stats.setup_started >= k && stats.setup_completed >= k {
            stats.setup_completion_rate
        } else {
            None
        };
        PublicStats {
            project: stats.project.clone(),
            from: stats.from,
            to: stats.to,
            min_count: k,
            installs: Cell::new(stats.installs, k),
            installs_all_time: Cell::new(stats.installs_all_time, k),
            active_installs: Cell::new(stats.active_installs, k),
            setup_started: Cell::new(stats.setup_started, k),
            setup_completed: Cell::new(stats.setup_completed, k),
            setup_completion_rate: rate,
            weekly: stats
                .weekly
                .iter()
                .map(|w| PublicWeek {
                    week: w.week,
                    installs: Cell::new(w.installs, k),
                    active_installs: Cell::new(w.active_installs, k),
                })
                .collect(),
            versions: fold(&stats.versions, k),
            os: fold(&stats.os, k),
            arch: fold(&stats.arch, k),
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
        "<h1 id=\"project-name\">{}</h1>\n<p class=\"sub\">Public usage numbers, {} to {} (UTC). \
         Counts below {k} are shown as <q>&lt; {k}</q> so that no small group of users stands out.</p>\n\
         <section class=\"kpis\">\n",
        Esc(&p.project),
        p.from,
        p.to,
        k = p.min_count
    );
    for (id, label, value) in [
        ("stat-installs", "New installs", p.installs.text()),
        (
            "stat-installs-all-time",
            "Installs, all time",
            p.installs_all_time.text(),
        ),
        (
            "stat-active",
            "Weekly active installs",
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
        "<p class=\"note\">Weeks below {} are drawn at zero; the table gives each week.</p>\n\
         <details><summary>Weekly numbers</summary><div class=\"table-scroll\"><table><thead><tr>\
         <th scope=\"col\">Week</th><th scope=\"col\" class=\"n\">New installs</th>\
         <th scope=\"col\" class=\"n\">Weekly active installs</th></tr></thead><tbody>",
        p.min_count
    );
    for w in &p.weekly {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            w.week,
            w.installs.text(),
            w.active_installs.text()
        );
    }
    body.push_str("</tbody></table></div></details>\n<div class=\"cols\">\n");
    breakdown_table(&mut body, "versions", "Version", &p.versions);
    breakdown_table(&mut body, "os", "OS", &p.os);
    breakdown_table(&mut body, "arch", "Arch", &p.arch);
    body.push_str("</div>\n");
    page(&p.project, Chrome::Plain, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::pages::tests::{assert_escaped, sample_stats};

    #[test]
    fn cells_below_k_are_suppressed() {
        let table = [
            (0, 10, "\"< 10\""),
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
    fn public_stats_publish_no_small_cell() {
        let stats = sample_stats();
        let p = PublicStats::from_stats(&stats, 10);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["installs"], 12);
        assert_eq!(json["active_installs"], "< 10");
        assert_eq!(json["setup_started"], "< 10");
        assert_eq!(json["installs_all_time"], 40);
        assert_eq!(json["setup_completion_rate"], serde_json::Value::Null);
        // Every number anywhere in the JSON is at least k, except the threshold itself.
        fn walk(v: &serde_json::Value, key: &str) {
            match v {
                serde_json::Value::Number(n) if key != "min_count" => {
                    assert!(n.as_f64().unwrap() >= 10.0, "{key} = {n}")
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, key)),
                serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| walk(x, k)),
                _ => {}
            }
        }
        walk(&json, "");
        // Only "1.2.0" has no count >= 10 either, so every version folds into other.
        assert!(p.versions.rows.is_empty());
        assert_eq!(
            p.versions.other,
            Some(PublicOther {
                installs: Cell::Count(12),
                active_installs: Cell::Suppressed("< 10".to_owned())
            })
        );
        assert_eq!(p.os.rows[0].key, "linux");
        assert_eq!(p.os.rows[0].installs, Cell::Count(12));
        assert_eq!(
            p.os.rows[0].active_installs,
            Cell::Suppressed("< 10".to_owned())
        );
    }

    #[test]
    fn public_page_never_shows_events_and_escapes_keys() {
        let mut stats = sample_stats();
        stats.versions[1].installs = 50;
        let p = PublicStats::from_stats(&stats, 3);
        let html = render_public(&p);
        assert_escaped(&html);
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "a named version row"
        );
        assert!(
            !html.contains("alert(1)&lt;/script"),
            "event names are never published"
        );
        assert!(!html.contains("Sign out"));
        assert!(html.contains("id=\"stat-installs\">12</div>"));
        assert!(html.contains("Counts below 3 are shown as"));
    }

    #[test]
    fn the_public_window_is_whole_weeks() {
        let today: Day = "2026-11-21".parse().unwrap();
        let (from, to) = public_window(today);
        assert_eq!(from.to_string(), "2026-08-31");
        assert_eq!(from.iso_weekday(), 1);
        assert_eq!(to, today);
    }
}
