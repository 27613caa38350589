//! Computes a [`ProjectStats`] from what storage returns.
//!
//! The arithmetic lives here rather than in SQL so that every backend only
//! has to return the same simple rows ([`StatsInput`]) and the numbers cannot
//! drift between SQLite and a later PostgreSQL backend.

use std::collections::{BTreeMap, HashMap};

use telemetry_protocol::manifest::builtin;
use telemetry_protocol::{Day, Manifest, Tier};

pub mod adoption;
pub mod health;
pub(crate) mod installs;
pub mod props;

use crate::report::{
    Breakdown, Cohort, DailyPoint, EventBreakdown, EventTotal, ProjectStats, TierShare, WeeklyPoint,
};
use crate::store::{StatsInput, Store, StoreError};

/// Reads and computes the stats of `project` over `from..=to`, with prop
/// breakdowns for the props seen (no manifest: kinds unknown but the built-ins').
pub async fn project_stats(
    store: &dyn Store,
    project: &str,
    from: Day,
    to: Day,
) -> Result<ProjectStats, StoreError> {
    project_stats_declared(store, project, None, from, to).await
}

/// Reads and computes the stats of `project` over `from..=to`, with a prop
/// breakdown for every event and prop `manifest` declares (and any other seen).
pub async fn project_stats_declared(
    store: &dyn Store,
    project: &str,
    manifest: Option<&Manifest>,
    from: Day,
    to: Day,
) -> Result<ProjectStats, StoreError> {
    let (lo, hi) = if from <= to { (from, to) } else { (to, from) };
    // Delivery health's sentence is about the week of `to`, which may start
    // before the window.
    let first = lo.min(hi.week_start());
    // The reads are independent, so they are issued together: a backend
    // with several read connections runs them side by side (PostgreSQL's
    // counters and per-prop counters take most of the time), and the others
    // lose nothing. Each read sees the data as of its own start, as when
    // they ran one after another.
    let (input, rows, refusals, uploads, uses) = tokio::try_join!(
        store.stats_input(project, from, to),
        store.prop_counters(project, first, hi, None),
        store.refusals(project, first, hi),
        store.uploads(project, first, hi),
        store.weekly_uses(project, lo.week_start(), hi.week_start(), None, None),
    )?;
    let weeks = props::weeks_of(lo, hi);
    let mut stats = compute(project, from, to, &input);
    stats.props = props::breakdowns(manifest, lo, hi, &rows, &uses);
    let installs = installs::WeeklyInstalls::of(&weeks, &uses);
    adoption::add_installs(&mut stats.commands, &installs);
    for (point, n) in stats.weekly.iter_mut().zip(installs.any()) {
        point.identified_installs = *n;
    }
    stats.delivery = health::delivery_health(lo, hi, &input, &rows, &refusals, &uploads);
    Ok(stats)
}

/// Reads the prop breakdowns of one event over `from..=to`: only that
/// event's counter cells are read. With `prop`, only that prop's breakdown.
pub async fn event_breakdown(
    store: &dyn Store,
    project: &str,
    manifest: Option<&Manifest>,
    from: Day,
    to: Day,
    event: &str,
    prop: Option<&str>,
) -> Result<EventBreakdown, StoreError> {
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    // Independent reads, issued together as in `project_stats_declared`.
    let (rows, uses) = tokio::try_join!(
        store.prop_counters(project, from, to, Some(event)),
        store.weekly_uses(
            project,
            from.week_start(),
            to.week_start(),
            Some(event),
            prop,
        ),
    )?;
    let count = rows
        .iter()
        .filter(|r| r.event == event)
        .map(|r| r.count)
        .sum();
    let props = props::breakdowns(manifest, from, to, &rows, &uses)
        .into_iter()
        .filter(|b| b.event == event && prop.is_none_or(|p| b.prop == p))
        .collect();
    Ok(EventBreakdown {
        project: project.to_owned(),
        from,
        to,
        event: event.to_owned(),
        count,
        props,
    })
}

/// **Computes the stats** of `project` over `from..=to` from `input`; `props`
/// stays empty (it needs [`Store::prop_counters`], see [`project_stats_declared`]).
///
/// Counts come from the daily counters only. `active_installs` is the `active`
/// count of the ISO week containing `to`, up to `to`; weekly points cover
/// whole ISO weeks, clipped at `to`.
pub fn compute(project: &str, from: Day, to: Day, input: &StatsInput) -> ProjectStats {
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let last_week = to.week_start();
    let in_window = |d: Day| from <= d && d <= to;

    let mut daily: BTreeMap<Day, DailyPoint> = BTreeMap::new();
    let mut day = from;
    while day <= to {
        daily.insert(
            day,
            DailyPoint {
                day,
                installs: 0,
                active: 0,
                setup_started: 0,
                setup_completed: 0,
                events: 0,
            },
        );
        day = day.add_days(1);
    }
    let mut weekly: BTreeMap<Day, WeeklyPoint> = BTreeMap::new();
    let mut week = from.week_start();
    while week <= to {
        weekly.insert(
            week,
            WeeklyPoint {
                week: week.iso_week(),
                installs: 0,
                active_installs: 0,
                setup_started: 0,
                setup_completed: 0,
                identified_installs: 0,
            },
        );
        week = week.add_days(7);
    }

    let mut versions: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut os: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut arch: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut tiers: BTreeMap<Tier, u64> = [Tier::Aggregate, Tier::Anonymous, Tier::Full]
        .into_iter()
        .map(|t| (t, 0))
        .collect();
    let mut events: HashMap<&str, u64> = HashMap::new();
    let (mut installs, mut active_installs, mut started, mut completed) = (0, 0, 0, 0);

    for row in &input.counters {
        if row.day > to {
            continue;
        }
        let event = row.event.as_str();
        if let Some(w) = weekly.get_mut(&row.day.week_start()) {
            match event {
                builtin::INSTALL => w.installs += row.count,
                builtin::ACTIVE => w.active_installs += row.count,
                builtin::SETUP_STARTED => w.setup_started += row.count,
                builtin::SETUP_COMPLETED => w.setup_completed += row.count,
                _ => {}
            }
        }
        let is_install = event == builtin::INSTALL;
        let is_recent_active = event == builtin::ACTIVE && row.day >= last_week;
        if is_recent_active {
            active_installs += row.count;
        }
        if is_install || is_recent_active {
            let (i, a) = if is_install && in_window(row.day) {
                (row.count, 0)
            } else if is_recent_active {
                (0, row.count)
            } else {
                (0, 0)
            };
            for (map, key) in [
                (&mut versions, row.version.as_str()),
                (&mut os, row.os.as_str()),
                (&mut arch, row.arch.as_str()),
            ] {
                let entry = map.entry(key).or_default();
                entry.0 += i;
                entry.1 += a;
            }
        }
        if !in_window(row.day) {
            continue;
        }
        let point = daily
            .get_mut(&row.day)
            .expect("every window day is present");
        point.events += row.count;
        match event {
            builtin::INSTALL => {
                point.installs += row.count;
                installs += row.count;
            }
            builtin::ACTIVE => point.active += row.count,
            builtin::SETUP_STARTED => {
                point.setup_started += row.count;
                started += row.count;
            }
            builtin::SETUP_COMPLETED => {
                point.setup_completed += row.count;
                completed += row.count;
            }
            _ => {}
        }
        *tiers.entry(row.tier).or_default() += row.count;
        *events.entry(event).or_default() += row.count;
    }

    ProjectStats {
        project: project.to_owned(),
        from,
        to,
        installs,
        installs_all_time: input.installs_all_time,
        active_installs,
        setup_started: started,
        setup_completed: completed,
        setup_completion_rate: (started > 0).then(|| completed as f64 / started as f64),
        daily: daily.into_values().collect(),
        weekly: weekly.into_values().collect(),
        versions: breakdown(versions),
        os: breakdown(os),
        arch: breakdown(arch),
        tiers: tiers
            .into_iter()
            .filter(|(t, _)| *t != Tier::Off)
            .map(|(tier, events)| TierShare { tier, events })
            .collect(),
        events: {
            let mut totals: Vec<EventTotal> = events
                .into_iter()
                .map(|(event, count)| EventTotal {
                    event: event.to_owned(),
                    count,
                })
                .collect();
            totals.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.event.cmp(&b.event)));
            totals
        },
        retention: retention(input, from, to),
        props: Vec::new(),
        adoption: adoption::version_adoption(from, to, input),
        commands: adoption::command_usage(from, to, input),
        delivery: Default::default(),
    }
}

fn breakdown(map: HashMap<&str, (u64, u64)>) -> Vec<Breakdown> {
    let mut rows: Vec<Breakdown> = map
        .into_iter()
        .filter(|(_, (i, a))| *i > 0 || *a > 0)
        .map(|(key, (installs, active_installs))| Breakdown {
            key: key.to_owned(),
            installs,
            active_installs,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.installs
            .cmp(&a.installs)
            .then_with(|| b.active_installs.cmp(&a.active_installs))
            .then_with(|| a.key.cmp(&b.key))
    });
    rows
}

fn retention(input: &StatsInput, from: Day, to: Day) -> Vec<Cohort> {
    let mut cohorts: BTreeMap<Day, Vec<u64>> = BTreeMap::new();
    let first = from.week_start();
    let last = to.week_start();
    for row in &input.cohorts {
        if row.cohort < first || row.cohort > last || row.active < row.cohort || row.active > last {
            continue;
        }
        let span = ((last.days_since_epoch() - row.cohort.days_since_epoch()) / 7) as usize + 1;
        let retained = cohorts.entry(row.cohort).or_insert_with(|| vec![0; span]);
        let offset = ((row.active.days_since_epoch() - row.cohort.days_since_epoch()) / 7) as usize;
        retained[offset] += row.installs;
    }
    cohorts
        .into_iter()
        .map(|(week, retained)| Cohort {
            week: week.iso_week(),
            installs: retained[0],
            retained,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CohortRow, CounterRow};

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn row(d: &str, event: &str, version: &str, tier: Tier, count: u64) -> CounterRow {
        CounterRow::on_linux(day(d), event, version, tier, count)
    }

    #[test]
    fn lifecycle_counts_rates_and_breakdowns() {
        // 2026-11-16 is a Monday; the window is Wed 18th to Sat 21st.
        let input = StatsInput {
            counters: vec![
                row("2026-11-16", "install", "1.0", Tier::Aggregate, 4), // before the window
                row("2026-11-16", "active", "1.0", Tier::Aggregate, 2),  // same week as `to`
                row("2026-11-18", "install", "1.0", Tier::Aggregate, 3),
                row("2026-11-19", "install", "1.1", Tier::Anonymous, 5),
                row("2026-11-19", "setup_started", "1.1", Tier::Anonymous, 4),
                row("2026-11-20", "setup_completed", "1.1", Tier::Full, 3),
                row("2026-11-21", "active", "1.1", Tier::Anonymous, 6),
                row("2026-11-21", "command", "1.1", Tier::Anonymous, 10),
            ],
            installs_all_time: 20,
            cohorts: vec![],
        };
        let s = compute("p", day("2026-11-18"), day("2026-11-21"), &input);
        assert_eq!(s.installs, 8);
        assert_eq!(s.installs_all_time, 20);
        assert_eq!(s.active_installs, 8, "the whole ISO week of `to`");
        assert_eq!((s.setup_started, s.setup_completed), (4, 3));
        assert_eq!(s.setup_completion_rate, Some(0.75));
        assert_eq!(s.daily.len(), 4);
        assert_eq!(s.daily[0].installs, 3);
        assert_eq!(s.daily[3].events, 16);
        assert_eq!(s.weekly.len(), 1);
        assert_eq!(s.weekly[0].installs, 12, "weekly points cover whole weeks");
        assert_eq!(s.versions[0].key, "1.1");
        assert_eq!(
            (s.versions[0].installs, s.versions[0].active_installs),
            (5, 6)
        );
        assert_eq!(
            (s.versions[1].installs, s.versions[1].active_installs),
            (3, 2)
        );
        assert_eq!(s.os[0].installs, 8);
        let tier = |t| s.tiers.iter().find(|x| x.tier == t).unwrap().events;
        assert_eq!(tier(Tier::Aggregate), 3);
        assert_eq!(tier(Tier::Anonymous), 25);
        assert_eq!(tier(Tier::Full), 3);
        assert_eq!(s.events[0].event, "command");
    }

    #[test]
    fn the_help_names_every_json_field() {
        fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        out.push(k.clone());
                        keys(v, out);
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let input = StatsInput {
            counters: vec![
                row("2026-11-16", "active", "1.0", Tier::Aggregate, 2),
                row("2026-11-16", "command", "1.0", Tier::Aggregate, 2),
            ],
            cohorts: vec![CohortRow {
                cohort: day("2026-11-16"),
                active: day("2026-11-16"),
                installs: 1,
            }],
            installs_all_time: 1,
        };
        let mut s = compute("p", day("2026-11-16"), day("2026-11-17"), &input);
        s.props = props::breakdowns(
            None,
            day("2026-11-16"),
            day("2026-11-17"),
            &[crate::store::PropCounterRow {
                day: day("2026-11-16"),
                event: "command".into(),
                props: r#"{"name":"x"}"#.into(),
                count: 2,
            }],
            &[],
        );
        let mut all = Vec::new();
        keys(&serde_json::to_value(&s).unwrap(), &mut all);
        for key in all {
            assert!(
                crate::report::FIELDS_HELP.contains(&key),
                "`stats --help` does not explain {key}"
            );
        }
    }

    #[test]
    fn empty_input_gives_zeros_and_no_rate() {
        let s = compute(
            "p",
            day("2026-11-01"),
            day("2026-11-30"),
            &StatsInput::default(),
        );
        assert_eq!(s.installs, 0);
        assert_eq!(s.setup_completion_rate, None);
        assert_eq!(s.daily.len(), 30);
        assert!(s.daily.iter().all(|d| d.events == 0));
        assert!(s.versions.is_empty());
    }

    #[test]
    fn retention_by_cohort() {
        let input = StatsInput {
            cohorts: vec![
                CohortRow {
                    cohort: day("2026-11-02"),
                    active: day("2026-11-02"),
                    installs: 10,
                },
                CohortRow {
                    cohort: day("2026-11-02"),
                    active: day("2026-11-16"),
                    installs: 4,
                },
                CohortRow {
                    cohort: day("2026-11-09"),
                    active: day("2026-11-09"),
                    installs: 7,
                },
            ],
            ..StatsInput::default()
        };
        let s = compute("p", day("2026-11-02"), day("2026-11-21"), &input);
        assert_eq!(s.retention.len(), 2);
        assert_eq!(s.retention[0].installs, 10);
        assert_eq!(s.retention[0].retained, vec![10, 0, 4]);
        assert_eq!(s.retention[1].retained, vec![7, 0]);
    }
}
