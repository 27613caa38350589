//! CSV exports of a project's daily and weekly series and of each breakdown,
//! written from the same [`ProjectStats`] the page shows.
//!
//! Cells follow RFC 4180: a cell holding a comma, quote or line break is
//! quoted, with quotes doubled. A text cell that starts with `=`, `+`, `-`,
//! `@`, a tab or a carriage return gets a leading `'`, because spreadsheets run
//! such cells as formulas and these texts (versions, OS names, event names)
//! came from clients.

use std::fmt::Write as _;

use super::html::url_component;
use super::range::Range;
use crate::report::{Breakdown, ProjectStats};

/// One exportable table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// One row per day: installs, active, setup started and completed, all events.
    Daily,
    /// One row per ISO week.
    Weekly,
    /// The version breakdown.
    Versions,
    /// The OS breakdown.
    Os,
    /// The arch breakdown.
    Arch,
    /// Events received at each tier.
    Tiers,
    /// Every event's total.
    Events,
}

impl Export {
    /// Every export, in the order the page lists them.
    pub const ALL: [Export; 7] = [
        Export::Daily,
        Export::Weekly,
        Export::Versions,
        Export::Os,
        Export::Arch,
        Export::Tiers,
        Export::Events,
    ];

    /// The name used in the URL and the file name.
    pub fn name(self) -> &'static str {
        match self {
            Export::Daily => "daily",
            Export::Weekly => "weekly",
            Export::Versions => "versions",
            Export::Os => "os",
            Export::Arch => "arch",
            Export::Tiers => "tiers",
            Export::Events => "events",
        }
    }

    /// The export a file name such as `daily.csv` names.
    pub fn from_file_name(file: &str) -> Option<Export> {
        let name = file.strip_suffix(".csv")?;
        Export::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The URL of this export for `project` over `range`.
    pub fn href(self, project: &str, range: &Range) -> String {
        format!(
            "/dashboard/projects/{}/export/{}.csv?from={}&to={}",
            url_component(project),
            self.name(),
            range.from,
            range.to
        )
    }

    /// The CSV text, header line first, lines ending in CRLF as RFC 4180 asks.
    pub fn render(self, stats: &ProjectStats) -> String {
        let mut out = String::new();
        match self {
            Export::Daily => {
                line(
                    &mut out,
                    &[
                        "day",
                        "installs",
                        "active",
                        "setup_started",
                        "setup_completed",
                        "events",
                    ],
                );
                for d in &stats.daily {
                    let _ = write!(
                        out,
                        "{},{},{},{},{},{}\r\n",
                        d.day, d.installs, d.active, d.setup_started, d.setup_completed, d.events
                    );
                }
            }
            Export::Weekly => {
                line(
                    &mut out,
                    &[
                        "week",
                        "installs",
                        "active_installs",
                        "setup_started",
                        "setup_completed",
                    ],
                );
                for w in &stats.weekly {
                    let _ = write!(
                        out,
                        "{},{},{},{},{}\r\n",
                        w.week, w.installs, w.active_installs, w.setup_started, w.setup_completed
                    );
                }
            }
            Export::Versions => breakdown(&mut out, "version", &stats.versions),
            Export::Os => breakdown(&mut out, "os", &stats.os),
            Export::Arch => breakdown(&mut out, "arch", &stats.arch),
            Export::Tiers => {
                line(&mut out, &["tier", "events"]);
                for t in &stats.tiers {
                    let _ = write!(out, "{},{}\r\n", t.tier, t.events);
                }
            }
            Export::Events => {
                line(&mut out, &["event", "count"]);
                for e in &stats.events {
                    let _ = write!(out, "{},{}\r\n", cell(&e.event), e.count);
                }
            }
        }
        out
    }
}

fn line(out: &mut String, cells: &[&str]) {
    let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

fn breakdown(out: &mut String, key: &str, rows: &[Breakdown]) {
    line(out, &[key, "installs", "active_installs"]);
    for b in rows {
        let _ = write!(
            out,
            "{},{},{}\r\n",
            cell(&b.key),
            b.installs,
            b.active_installs
        );
    }
}

/// One text cell, defused against spreadsheet formulas and quoted when needed.
pub fn cell(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::pages::tests::sample_stats;

    #[test]
    fn cells_are_quoted_and_defused() {
        let table = [
            ("linux", "linux"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("-1+2", "'-1+2"),
            ("@cmd", "'@cmd"),
            ("two\nlines", "\"two\nlines\""),
        ];
        for (input, expected) in table {
            assert_eq!(cell(input), expected, "{input}");
        }
    }

    #[test]
    fn exports_carry_the_report_numbers() {
        let stats = sample_stats();
        let daily = Export::Daily.render(&stats);
        let mut lines = daily.split("\r\n");
        assert_eq!(
            lines.next(),
            Some("day,installs,active,setup_started,setup_completed,events")
        );
        assert_eq!(lines.next(), Some("2026-11-09,0,1,1,1,5"));
        assert_eq!(daily.matches("\r\n").count(), 1 + stats.daily.len());
        let versions = Export::Versions.render(&stats);
        assert_eq!(
            versions,
            "version,installs,active_installs\r\n1.2.0,9,5\r\n<img src=x onerror=alert(1)>,3,2\r\n"
        );
        assert!(Export::Weekly.render(&stats).contains("2026-W47,7,7,4,3\r\n"));
        assert!(Export::Tiers.render(&stats).contains("anonymous,20\r\n"));
        assert!(Export::Events.render(&stats).starts_with("event,count\r\ncommand,40\r\n"));
    }

    #[test]
    fn file_names_map_to_exports() {
        for e in Export::ALL {
            assert_eq!(Export::from_file_name(&format!("{}.csv", e.name())), Some(e));
        }
        assert_eq!(Export::from_file_name("daily"), None);
        assert_eq!(Export::from_file_name("secrets.csv"), None);
    }
}
