//! Version adoption and command usage, from the same counter rows as the
//! rest of the stats ([`StatsInput`]).

use std::collections::{BTreeMap, HashMap};

use telemetry_protocol::Day;
use telemetry_protocol::manifest::builtin;

use super::installs::{WeeklyInstalls, share};
use super::props::{semver_cmp, weeks_of};
use crate::report::{AdoptionSeries, CommandUsage, OTHER, VersionAdoption};
use crate::store::StatsInput;

/// Versions drawn one by one before the rest folds into [`OTHER`].
pub const TOP_VERSIONS: usize = 10;

/// **Version adoption**: active installs per ISO week overlapping
/// `from..=to` (whole weeks, clipped at `to`, like `ProjectStats::weekly`) by
/// tool version. The [`TOP_VERSIONS`] versions with the most active installs
/// over those weeks are kept, in semver order; the rest fold into [`OTHER`].
pub fn version_adoption(from: Day, to: Day, input: &StatsInput) -> VersionAdoption {
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let weeks = weeks_of(from, to);
    let first = from.week_start();
    let mut totals = vec![0u64; weeks.len()];
    let mut by_version: HashMap<&str, Vec<u64>> = HashMap::new();
    for row in &input.counters {
        if row.event != builtin::ACTIVE || row.day < first || row.day > to {
            continue;
        }
        let w = ((row.day.week_start().days_since_epoch() - first.days_since_epoch()) / 7) as usize;
        let Some(total) = totals.get_mut(w) else {
            continue;
        };
        *total += row.count;
        by_version
            .entry(row.version.as_str())
            .or_insert_with(|| vec![0; weeks.len()])[w] += row.count;
    }
    let mut ranked: Vec<(&str, Vec<u64>)> = by_version
        .into_iter()
        .filter(|(v, _)| *v != OTHER)
        .collect();
    ranked.sort_by(|a, b| {
        let (sa, sb): (u64, u64) = (a.1.iter().sum(), b.1.iter().sum());
        sb.cmp(&sa).then_with(|| semver_cmp(a.0, b.0))
    });
    let mut other: Option<Vec<u64>> = None;
    let mut folded = 0u64;
    if ranked.len() > TOP_VERSIONS + 1 {
        for (_, counts) in ranked.split_off(TOP_VERSIONS) {
            folded += 1;
            let o = other.get_or_insert_with(|| vec![0; weeks.len()]);
            for (a, b) in o.iter_mut().zip(counts) {
                *a += b;
            }
        }
    }
    // The collector's own cardinality fold joins the tail.
    let collector_fold: Vec<u64> = input
        .counters
        .iter()
        .filter(|r| r.event == builtin::ACTIVE && r.version == OTHER)
        .filter(|r| r.day >= first && r.day <= to)
        .fold(vec![0; weeks.len()], |mut acc, r| {
            let w =
                ((r.day.week_start().days_since_epoch() - first.days_since_epoch()) / 7) as usize;
            if let Some(c) = acc.get_mut(w) {
                *c += r.count;
            }
            acc
        });
    if collector_fold.iter().any(|&c| c > 0) {
        folded = folded.max(1);
        let o = other.get_or_insert_with(|| vec![0; weeks.len()]);
        for (a, b) in o.iter_mut().zip(collector_fold) {
            *a += b;
        }
    }
    ranked.sort_by(|a, b| semver_cmp(a.0, b.0));
    let series = |version: String, counts: Vec<u64>| AdoptionSeries {
        share: counts
            .iter()
            .zip(&totals)
            .map(|(&n, &t)| (t > 0).then(|| n as f64 / t as f64))
            .collect(),
        version,
        active_installs: counts,
    };
    let mut versions: Vec<AdoptionSeries> = ranked
        .into_iter()
        .map(|(v, c)| series(v.to_owned(), c))
        .collect();
    if let Some(o) = other {
        versions.push(series(OTHER.to_owned(), o));
    }
    VersionAdoption {
        weeks: weeks.iter().map(|w| w.iso_week()).collect(),
        active_installs: totals,
        versions,
        folded,
    }
}

/// **Command usage**: every event but the lifecycle and delivery-health
/// ones, with its count in `from..=to` and per ISO week (days in the window
/// only), most used first.
pub fn command_usage(from: Day, to: Day, input: &StatsInput) -> Vec<CommandUsage> {
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let weeks = weeks_of(from, to);
    let first = from.week_start();
    let last_week = to.week_start();
    let mut last_active = 0u64;
    let mut by_event: BTreeMap<&str, (u64, Vec<u64>, u64)> = BTreeMap::new();
    for row in &input.counters {
        if row.day > to {
            continue;
        }
        if row.event == builtin::ACTIVE {
            if row.day >= last_week {
                last_active += row.count;
            }
            continue;
        }
        if row.event == builtin::DROPPED || builtin::ALL.contains(&row.event.as_str()) {
            continue;
        }
        let entry = by_event
            .entry(row.event.as_str())
            .or_insert_with(|| (0, vec![0; weeks.len()], 0));
        // The last week's count, whole, as the `active` count it is divided by.
        if row.day >= last_week {
            entry.2 += row.count;
        }
        if row.day < from {
            continue;
        }
        entry.0 += row.count;
        let w = ((row.day.week_start().days_since_epoch() - first.days_since_epoch()) / 7) as usize;
        if let Some(c) = entry.1.get_mut(w) {
            *c += row.count;
        }
    }
    let mut out: Vec<CommandUsage> = by_event
        .into_iter()
        .filter(|(_, (count, _, last))| *count > 0 || *last > 0)
        .map(|(event, (count, weekly, last))| CommandUsage {
            event: event.to_owned(),
            count,
            weekly,
            per_active_install: (last_active > 0).then(|| last as f64 / last_active as f64),
            installs: None,
            install_share: None,
            weekly_installs: vec![0; weeks.len()],
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.event.cmp(&b.event)));
    out
}

/// Adds the distinct installs (`anonymous` and `full`) to command usage:
/// each event's weekly installs, and in the last week their share of the
/// installs that sent anything. `installs` must cover the weeks of `commands`.
pub(crate) fn add_installs(commands: &mut [CommandUsage], installs: &WeeklyInstalls) {
    let all = installs.last(installs.any());
    for c in commands {
        c.weekly_installs = installs.event(&c.event);
        c.installs = installs.last(&c.weekly_installs);
        c.install_share = share(c.installs, all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CounterRow;
    use telemetry_protocol::Tier;

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn row(d: &str, event: &str, version: &str, count: u64) -> CounterRow {
        CounterRow::on_linux(day(d), event, version, Tier::Aggregate, count)
    }

    #[test]
    fn more_than_ten_versions_keep_the_top_in_semver_order_and_fold_the_rest() {
        // 14 versions, 1.0 .. 1.13; 1.k has k+1 actives in week 1 and 2(k+1) in week 2.
        let mut counters = Vec::new();
        for k in 0..14u64 {
            let v = format!("1.{k}");
            counters.push(row("2026-11-16", "active", &v, k + 1));
            counters.push(row("2026-11-24", "active", &v, 2 * (k + 1)));
        }
        counters.push(row("2026-11-24", "active", OTHER, 5));
        counters.push(row("2026-11-24", "install", "1.13", 50)); // not an active
        let input = StatsInput {
            counters,
            ..StatsInput::default()
        };
        let a = version_adoption(day("2026-11-18"), day("2026-11-25"), &input);
        assert_eq!(a.weeks.len(), 2);
        assert_eq!(a.active_installs, [105, 210 + 5]);
        let names: Vec<&str> = a.versions.iter().map(|s| s.version.as_str()).collect();
        assert_eq!(
            names,
            [
                "1.4", "1.5", "1.6", "1.7", "1.8", "1.9", "1.10", "1.11", "1.12", "1.13", OTHER
            ],
            "the ten most active in semver order (1.10 after 1.9), the rest folded"
        );
        assert_eq!(a.folded, 4);
        let other = a.versions.last().unwrap();
        assert_eq!(other.active_installs, [1 + 2 + 3 + 4, 2 * 10 + 5]);
        for w in 0..2 {
            let sum: f64 = a.versions.iter().filter_map(|s| s.share[w]).sum();
            assert!(
                (sum - 1.0).abs() < 1e-9,
                "week {w} shares add up to 1: {sum}"
            );
        }
    }

    #[test]
    fn adoption_without_actives_is_empty_with_no_shares() {
        let a = version_adoption(day("2026-11-18"), day("2026-11-25"), &StatsInput::default());
        assert_eq!(a.active_installs, [0, 0]);
        assert!(a.versions.is_empty());
    }

    #[test]
    fn command_usage_counts_per_week_and_per_active_install() {
        let input = StatsInput {
            counters: vec![
                row("2026-11-16", "build", "1.0", 4), // before `from`, same week as it
                row("2026-11-18", "build", "1.0", 6),
                row("2026-11-24", "build", "1.0", 10),
                row("2026-11-24", "active", "1.0", 4),
                row("2026-11-25", "lint", "1.0", 2),
                row("2026-11-25", "install", "1.0", 9),
                row("2026-11-25", builtin::DROPPED, "1.0", 9),
            ],
            ..StatsInput::default()
        };
        let c = command_usage(day("2026-11-18"), day("2026-11-25"), &input);
        assert_eq!(c.len(), 2, "lifecycle and delivery health are not commands");
        assert_eq!(c[0].event, "build");
        assert_eq!(c[0].count, 16);
        assert_eq!(c[0].weekly, [6, 10]);
        assert_eq!(c[0].per_active_install, Some(2.5));
        assert_eq!(c[1].per_active_install, Some(0.5));
    }

    #[test]
    fn the_share_of_installs_that_used_a_command_is_of_the_last_week() {
        use crate::store::UseRow;
        let input = StatsInput {
            counters: vec![row("2026-11-24", "build", "1.0", 10)],
            ..StatsInput::default()
        };
        let mut c = command_usage(day("2026-11-18"), day("2026-11-25"), &input);
        let weeks = weeks_of(day("2026-11-18"), day("2026-11-25"));
        let use_row = |week: &str, event: &str, installs: u64| UseRow {
            week: day(week),
            event: event.into(),
            prop: String::new(),
            value: String::new(),
            installs,
        };
        let rows = [
            use_row("2026-11-16", "", 10),
            use_row("2026-11-23", "", 8),
            use_row("2026-11-23", "build", 2),
        ];
        add_installs(&mut c, &WeeklyInstalls::of(&weeks, &rows));
        assert_eq!(c[0].weekly_installs, [0, 2]);
        assert_eq!(c[0].installs, Some(2));
        assert_eq!(c[0].install_share, Some(0.25));
        // Aggregate data only: no installs to count.
        add_installs(&mut c, &WeeklyInstalls::of(&weeks, &[]));
        assert_eq!((c[0].installs, c[0].install_share), (None, None));
    }
}
