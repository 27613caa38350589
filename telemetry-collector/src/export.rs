//! Text renderings of a [`ProjectStats`]: CSV tables (shared by
//! `telemetry-collector stats --format csv` and the dashboard's downloads)
//! and the aligned table the `stats` command prints.
//!
//! Every value that came from a client is quoted as CSV requires, and a cell
//! that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is
//! prefixed with `'`, so opening an export can never execute client input.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::report::{Breakdown, ProjectStats};

/// Which table of a [`ProjectStats`] to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsvTable {
    /// One row per day: installs, active, setup started and completed, events.
    Daily,
    /// One row per ISO week.
    Weekly,
    /// Installs and weekly actives by tool version.
    Versions,
    /// Installs and weekly actives by OS.
    Os,
    /// Installs and weekly actives by CPU architecture.
    Arch,
    /// Every event's total.
    Events,
    /// Events per tier.
    Tiers,
    /// Retention by install-week cohort.
    Retention,
}

impl CsvTable {
    /// Every table, in the order the dashboard lists them.
    pub const ALL: [CsvTable; 8] = [
        CsvTable::Daily,
        CsvTable::Weekly,
        CsvTable::Versions,
        CsvTable::Os,
        CsvTable::Arch,
        CsvTable::Events,
        CsvTable::Tiers,
        CsvTable::Retention,
    ];

    /// The table's name in URLs and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            CsvTable::Daily => "daily",
            CsvTable::Weekly => "weekly",
            CsvTable::Versions => "versions",
            CsvTable::Os => "os",
            CsvTable::Arch => "arch",
            CsvTable::Events => "events",
            CsvTable::Tiers => "tiers",
            CsvTable::Retention => "retention",
        }
    }
}

/// The error for a name that is no [`CsvTable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown table; valid tables are: daily, weekly, versions, os, arch, events, tiers, retention"
)]
pub struct UnknownTable;

impl FromStr for CsvTable {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CsvTable::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownTable)
    }
}

/// One CSV cell, quoted when needed and defused against formula injection.
pub fn csv_cell(value: &str) -> String {
    let defused = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

fn push_row(out: &mut String, cells: &[String]) {
    let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
    out.push_str(&line.join(","));
    out.push_str("\r\n");
}

/// **Renders one table of `stats` as CSV** (RFC 4180, CRLF line ends, a header row).
pub fn csv(stats: &ProjectStats, table: CsvTable) -> String {
    let mut out = String::new();
    let s = |v: &dyn ToString| v.to_string();
    match table {
        CsvTable::Daily => {
            push_row(
                &mut out,
                &[
                    "day",
                    "installs",
                    "active",
                    "setup_started",
                    "setup_completed",
                    "events",
                ]
                .map(String::from),
            );
            for p in &stats.daily {
                push_row(
                    &mut out,
                    &[
                        s(&p.day),
                        s(&p.installs),
                        s(&p.active),
                        s(&p.setup_started),
                        s(&p.setup_completed),
                        s(&p.events),
                    ],
                );
            }
        }
        CsvTable::Weekly => {
            push_row(
                &mut out,
                &[
                    "week",
                    "installs",
                    "active_installs",
                    "setup_started",
                    "setup_completed",
                ]
                .map(String::from),
            );
            for p in &stats.weekly {
                push_row(
                    &mut out,
                    &[
                        s(&p.week),
                        s(&p.installs),
                        s(&p.active_installs),
                        s(&p.setup_started),
                        s(&p.setup_completed),
                    ],
                );
            }
        }
        CsvTable::Versions => breakdown_csv(&mut out, "version", &stats.versions),
        CsvTable::Os => breakdown_csv(&mut out, "os", &stats.os),
        CsvTable::Arch => breakdown_csv(&mut out, "arch", &stats.arch),
        CsvTable::Events => {
            push_row(&mut out, &["event", "count"].map(String::from));
            for e in &stats.events {
                push_row(&mut out, &[e.event.clone(), s(&e.count)]);
            }
        }
        CsvTable::Tiers => {
            push_row(&mut out, &["tier", "events"].map(String::from));
            for t in &stats.tiers {
                push_row(&mut out, &[s(&t.tier), s(&t.events)]);
            }
        }
        CsvTable::Retention => {
            let weeks = stats
                .retention
                .iter()
                .map(|c| c.retained.len())
                .max()
                .unwrap_or(0);
            let mut header = vec!["cohort_week".to_owned(), "installs".to_owned()];
            header.extend((0..weeks).map(|n| format!("week_{n}")));
            push_row(&mut out, &header);
            for c in &stats.retention {
                let mut row = vec![s(&c.week), s(&c.installs)];
                row.extend(c.retained.iter().map(|n| n.to_string()));
                push_row(&mut out, &row);
            }
        }
    }
    out
}

fn breakdown_csv(out: &mut String, key: &str, rows: &[Breakdown]) {
    push_row(
        out,
        &[key.to_owned(), "installs".into(), "active_installs".into()],
    );
    for r in rows {
        push_row(
            out,
            &[
                r.key.clone(),
                r.installs.to_string(),
                r.active_installs.to_string(),
            ],
        );
    }
}

/// Lays out rows as left-aligned text columns, the first row being the header.
fn columns(out: &mut String, rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            // Numbers align right, text left, as in any terminal table.
            let numeric = i > 0
                && (cell == "-"
                    || cell
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'%'));
            if numeric {
                let _ = write!(line, "{cell:>w$}  ", w = widths[i]);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Replaces control characters so client-sent text cannot move the terminal cursor.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// **Renders `stats` as aligned text** for a terminal.
pub fn table(stats: &ProjectStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} from {} to {} ({} days)\n",
        printable(&stats.project),
        stats.from,
        stats.to,
        stats.daily.len()
    );
    let rate = stats
        .setup_completion_rate
        .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    columns(
        &mut out,
        &[
            vec!["metric".into(), "value".into()],
            vec!["installs".into(), stats.installs.to_string()],
            vec![
                "installs (all time)".into(),
                stats.installs_all_time.to_string(),
            ],
            vec![
                "weekly active installs".into(),
                stats.active_installs.to_string(),
            ],
            vec!["setup started".into(), stats.setup_started.to_string()],
            vec!["setup completed".into(), stats.setup_completed.to_string()],
            vec!["setup completion rate".into(), rate],
        ],
    );
    for (title, rows) in [
        ("version", &stats.versions),
        ("os", &stats.os),
        ("arch", &stats.arch),
    ] {
        out.push('\n');
        let mut lines = vec![vec![
            title.to_owned(),
            "installs".into(),
            "weekly active".into(),
        ]];
        lines.extend(rows.iter().map(|r| {
            vec![
                printable(&r.key),
                r.installs.to_string(),
                r.active_installs.to_string(),
            ]
        }));
        columns(&mut out, &lines);
    }
    out.push('\n');
    let mut lines = vec![
        [
            "day",
            "installs",
            "active",
            "setup started",
            "setup completed",
            "events",
        ]
        .map(String::from)
        .to_vec(),
    ];
    lines.extend(stats.daily.iter().map(|p| {
        vec![
            p.day.to_string(),
            p.installs.to_string(),
            p.active.to_string(),
            p.setup_started.to_string(),
            p.setup_completed.to_string(),
            p.events.to_string(),
        ]
    }));
    columns(&mut out, &lines);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::compute;
    use crate::store::{CounterRow, StatsInput};
    use telemetry_protocol::{Day, Tier};

    fn stats() -> ProjectStats {
        let day: Day = "2026-11-20".parse().unwrap();
        let input = StatsInput {
            counters: vec![CounterRow {
                day,
                event: "install".into(),
                version: "=1+1,\"x\"".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                tier: Tier::Aggregate,
                count: 7,
            }],
            ..StatsInput::default()
        };
        compute("p", day, day.add_days(1), &input)
    }

    #[test]
    fn cells_are_quoted_and_defused() {
        let table = [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=cmd()", "'=cmd()"),
            ("@x", "'@x"),
            ("-1", "'-1"),
            ("line\nbreak", "\"line\nbreak\""),
        ];
        for (input, expected) in table {
            assert_eq!(csv_cell(input), expected, "{input:?}");
        }
    }

    #[test]
    fn daily_and_breakdown_csv() {
        let s = stats();
        let daily = csv(&s, CsvTable::Daily);
        assert_eq!(
            daily,
            "day,installs,active,setup_started,setup_completed,events\r\n\
             2026-11-20,7,0,0,0,7\r\n2026-11-21,0,0,0,0,0\r\n"
        );
        let versions = csv(&s, CsvTable::Versions);
        assert_eq!(
            versions,
            "version,installs,active_installs\r\n\"'=1+1,\"\"x\"\"\",7,0\r\n"
        );
        for t in CsvTable::ALL {
            assert_eq!(t.as_str().parse::<CsvTable>(), Ok(t));
            assert!(csv(&s, t).ends_with("\r\n"));
        }
    }

    #[test]
    fn table_lists_the_headline_numbers_aligned() {
        let text = table(&stats());
        let line = |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap();
        let installs = line("installs ");
        let rate = line("setup completion rate");
        assert!(installs.ends_with(" 7"), "{text}");
        assert!(rate.ends_with(" -"), "{text}");
        assert_eq!(
            installs.len(),
            rate.len(),
            "values are right-aligned:\n{text}"
        );
        assert!(line("2026-11-20").ends_with(" 7"), "{text}");
    }
}
