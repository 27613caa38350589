//! Text renderings of a [`ProjectStats`]: CSV tables (shared by
//! `telemetry-collector stats --format csv` and the dashboard's downloads)
//! and the aligned table the `stats` command prints.
//!
//! Every value that came from a client is quoted as CSV requires, and a cell
//! that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is
//! prefixed with `'`, so opening an export can never execute client input.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::report::{Breakdown, EventBreakdown, ProjectStats, PropBreakdown};

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
    /// Every prop breakdown: one row per event, prop and value.
    Props,
    /// The weekly series of the top values of every prop breakdown.
    PropWeeks,
    /// Version adoption: one row per week and version.
    Adoption,
    /// Command usage: one row per event, one column per week.
    Commands,
    /// Delivery health: one row per dropped reason, refusal, downgrade or ignored field.
    Delivery,
}

impl CsvTable {
    /// Every table, in the order the dashboard lists them.
    pub const ALL: [CsvTable; 13] = [
        CsvTable::Daily,
        CsvTable::Weekly,
        CsvTable::Versions,
        CsvTable::Os,
        CsvTable::Arch,
        CsvTable::Events,
        CsvTable::Tiers,
        CsvTable::Retention,
        CsvTable::Props,
        CsvTable::PropWeeks,
        CsvTable::Adoption,
        CsvTable::Commands,
        CsvTable::Delivery,
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
            CsvTable::Props => "props",
            CsvTable::PropWeeks => "prop_weeks",
            CsvTable::Adoption => "adoption",
            CsvTable::Commands => "commands",
            CsvTable::Delivery => "delivery",
        }
    }
}

/// The error for a name that is no [`CsvTable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown table; valid tables are: daily, weekly, versions, os, arch, events, tiers, retention, \
     props, prop_weeks, adoption, commands, delivery"
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
                    "identified_installs",
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
                        s(&p.identified_installs),
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
        CsvTable::Props => props_csv(&mut out, &stats.props),
        CsvTable::PropWeeks => prop_weeks_csv(&mut out, &stats.props),
        CsvTable::Adoption => {
            push_row(
                &mut out,
                &["week", "version", "active_installs", "share"].map(String::from),
            );
            let a = &stats.adoption;
            for (w, week) in a.weeks.iter().enumerate() {
                for v in &a.versions {
                    push_row(
                        &mut out,
                        &[
                            week.to_string(),
                            v.version.clone(),
                            v.active_installs.get(w).copied().unwrap_or(0).to_string(),
                            share_cell(v.share.get(w).copied().flatten()),
                        ],
                    );
                }
            }
        }
        CsvTable::Commands => {
            let mut header = vec![
                "event".to_owned(),
                "count".to_owned(),
                "per_active_install".to_owned(),
                "installs".to_owned(),
                "install_share".to_owned(),
            ];
            header.extend(stats.weekly.iter().map(|w| w.week.to_string()));
            push_row(&mut out, &header);
            for c in &stats.commands {
                let mut row = vec![
                    c.event.clone(),
                    c.count.to_string(),
                    share_cell(c.per_active_install),
                    count_cell(c.installs),
                    share_cell(c.install_share),
                ];
                row.extend(c.weekly.iter().map(u64::to_string));
                push_row(&mut out, &row);
            }
        }
        CsvTable::Delivery => {
            push_row(
                &mut out,
                &["kind", "reason", "version", "count", "details"].map(String::from),
            );
            let h = &stats.delivery;
            for r in &h.dropped {
                push_row(
                    &mut out,
                    &[
                        "dropped".to_owned(),
                        r.reason.clone(),
                        String::new(),
                        r.count.to_string(),
                        String::new(),
                    ],
                );
            }
            for (reason, count) in [
                ("all", h.uploads),
                ("retries", h.retries),
                ("replayed", h.replayed),
            ] {
                push_row(
                    &mut out,
                    &[
                        "uploads".to_owned(),
                        reason.to_owned(),
                        String::new(),
                        count.to_string(),
                        String::new(),
                    ],
                );
            }
            for (kind, rows) in [
                ("refused", &h.refused),
                ("downgraded", &h.downgraded),
                ("ignored", &h.ignored),
            ] {
                for r in rows {
                    push_row(
                        &mut out,
                        &[
                            kind.to_owned(),
                            r.reason.clone(),
                            r.version.clone(),
                            r.count.to_string(),
                            r.details.join(" "),
                        ],
                    );
                }
            }
        }
    }
    out
}

/// A ratio as CSV writes it: six decimals, empty when there is none.
fn share_cell(r: Option<f64>) -> String {
    r.map_or_else(String::new, |r| format!("{r:.6}"))
}

/// A count that may be unknown (distinct installs), empty when it is.
fn count_cell(n: Option<u64>) -> String {
    n.map_or_else(String::new, |n| n.to_string())
}

fn props_csv(out: &mut String, props: &[PropBreakdown]) {
    push_row(
        out,
        &[
            "event",
            "prop",
            "kind",
            "value",
            "count",
            "share",
            "installs",
            "install_share",
        ]
        .map(String::from),
    );
    for b in props {
        for v in &b.values {
            push_row(
                out,
                &[
                    b.event.clone(),
                    b.prop.clone(),
                    b.kind.clone(),
                    v.value.clone(),
                    v.count.to_string(),
                    share_cell(v.share),
                    count_cell(v.installs),
                    share_cell(v.install_share),
                ],
            );
        }
    }
}

fn prop_weeks_csv(out: &mut String, props: &[PropBreakdown]) {
    push_row(
        out,
        &["event", "prop", "value", "week", "count", "installs"].map(String::from),
    );
    for b in props {
        for s in &b.series {
            for (w, (week, n)) in b.weeks.iter().zip(&s.counts).enumerate() {
                let installs = s.installs.as_ref().and_then(|i| i.get(w).copied());
                push_row(
                    out,
                    &[
                        b.event.clone(),
                        b.prop.clone(),
                        s.value.clone(),
                        week.to_string(),
                        n.to_string(),
                        count_cell(installs),
                    ],
                );
            }
        }
    }
}

/// **One event's prop breakdowns as CSV**, the layout of the `props` table.
pub fn event_csv(breakdown: &EventBreakdown) -> String {
    let mut out = String::new();
    props_csv(&mut out, &breakdown.props);
    out
}

/// **One event's prop breakdowns as aligned text**: per prop, each value's
/// count and share, then the weekly counts of the top values.
pub fn event_table(b: &EventBreakdown) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} · {} from {} to {}: {} events",
        printable(&b.project),
        printable(&b.event),
        b.from,
        b.to,
        b.count
    );
    if b.props.is_empty() {
        out.push_str("\nno props declared or seen for this event\n");
    }
    for p in &b.props {
        let _ = writeln!(
            out,
            "\n{} ({}): {} without it; installs are distinct installs in {} (anonymous and full)",
            printable(&p.prop),
            p.kind,
            p.not_set,
            p.weeks
                .last()
                .map_or_else(|| "-".to_owned(), |w| w.to_string())
        );
        let percent =
            |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        let mut lines = vec![vec![
            "value".to_owned(),
            "events".into(),
            "share".into(),
            "installs".into(),
            "of installs".into(),
        ]];
        lines.extend(p.values.iter().map(|v| {
            vec![
                printable(&v.value),
                v.count.to_string(),
                percent(v.share),
                v.installs.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                percent(v.install_share),
            ]
        }));
        columns(&mut out, &lines);
        if !p.series.is_empty() {
            out.push('\n');
            let mut header = vec!["week".to_owned()];
            header.extend(p.series.iter().map(|s| printable(&s.value)));
            let mut lines = vec![header];
            for (w, week) in p.weeks.iter().enumerate() {
                let mut row = vec![week.to_string()];
                row.extend(
                    p.series
                        .iter()
                        .map(|s| s.counts.get(w).copied().unwrap_or(0).to_string()),
                );
                lines.push(row);
            }
            columns(&mut out, &lines);
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
    if let (Some(week), false) = (
        stats.adoption.weeks.last(),
        stats.adoption.versions.is_empty(),
    ) {
        let _ = writeln!(out, "\nversion adoption in {week}");
        let w = stats.adoption.weeks.len() - 1;
        let mut lines = vec![vec![
            "version".to_owned(),
            "active installs".into(),
            "share".into(),
        ]];
        lines.extend(stats.adoption.versions.iter().map(|v| {
            vec![
                printable(&v.version),
                v.active_installs.get(w).copied().unwrap_or(0).to_string(),
                v.share
                    .get(w)
                    .copied()
                    .flatten()
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            ]
        }));
        columns(&mut out, &lines);
    }
    let _ = writeln!(
        out,
        "\ndelivery health: {}",
        printable(&stats.delivery.summary)
    );
    if !stats.commands.is_empty() {
        out.push('\n');
        let mut lines = vec![vec![
            "event".to_owned(),
            "count".into(),
            "per weekly active install".into(),
            "share of installs (anonymous, full)".into(),
        ]];
        lines.extend(stats.commands.iter().map(|c| {
            vec![
                printable(&c.event),
                c.count.to_string(),
                c.per_active_install
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
                c.install_share
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
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

    /// Stats whose event, prop, value and version are all formula-like or hostile.
    fn hostile_stats() -> ProjectStats {
        let day: Day = "2026-11-20".parse().unwrap();
        let counter = |event: &str, version: &str, count: u64| {
            CounterRow::on_linux(day, event, version, Tier::Aggregate, count)
        };
        let input = StatsInput {
            counters: vec![
                counter("active", "=HYPERLINK(\"x\")", 3),
                counter("active", "1.0", 1),
                counter("+cmd", "1.0", 4),
            ],
            ..StatsInput::default()
        };
        let mut s = compute("p", day, day, &input);
        s.props = crate::stats::props::breakdowns(
            None,
            day,
            day,
            &[crate::store::PropCounterRow {
                day,
                event: "+cmd".into(),
                props: r#"{"@p":"-2+3","q":"a\u001b[2Jb"}"#.into(),
                count: 4,
            }],
            &[],
        );
        s
    }

    #[test]
    fn new_tables_defuse_formulas_and_agree_with_the_stats() {
        let s = hostile_stats();
        let props = csv(&s, CsvTable::Props);
        assert!(
            props.contains("'+cmd,'@p,undeclared,'-2+3,4,1.000000,,\r\n"),
            "{props}"
        );
        let weeks = csv(&s, CsvTable::PropWeeks);
        assert!(
            weeks.contains("'+cmd,'@p,'-2+3,2026-W47,4,0\r\n"),
            "{weeks}"
        );
        let adoption = csv(&s, CsvTable::Adoption);
        assert_eq!(
            adoption,
            "week,version,active_installs,share\r\n\
             2026-W47,1.0,1,0.250000\r\n\
             2026-W47,\"'=HYPERLINK(\"\"x\"\")\",3,0.750000\r\n"
        );
        let commands = csv(&s, CsvTable::Commands);
        assert_eq!(
            commands,
            "event,count,per_active_install,installs,install_share,2026-W47\r\n\
             '+cmd,4,1.000000,,,4\r\n",
            "no anonymous or full data: no installs to count"
        );
        let text = table(&s);
        assert!(text.contains("version adoption in 2026-W47"), "{text}");
        assert!(text.contains("+cmd"), "{text}");
        let breakdown = EventBreakdown {
            project: "p".into(),
            from: s.from,
            to: s.to,
            event: "+cmd".into(),
            count: 4,
            props: s.props.clone(),
        };
        let text = event_table(&breakdown);
        assert!(!text.contains('\u{1b}'), "no terminal escapes: {text}");
        assert!(text.contains("-2+3"), "{text}");
        assert_eq!(event_csv(&breakdown), props);
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
