//! Prop breakdowns: how each declared prop's values split, from the daily
//! counters' props (never from raw events), in the order that suits the
//! prop's kind.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use telemetry_protocol::manifest::{PropKind, bucket_labels, builtin};
use telemetry_protocol::{Day, Manifest, PropValue, Props};

use super::installs::{WeeklyInstalls, share as install_share};
use crate::report::{OTHER, PropBreakdown, ValueCount, ValueSeries};
use crate::store::{PropCounterRow, UseRow};

/// Values listed one by one before the rest folds into [`OTHER`].
pub const TOP_VALUES: usize = 10;
/// Values that get their own weekly series before the rest folds into [`OTHER`].
pub const SERIES_VALUES: usize = 5;

/// What a breakdown needs to know about one prop: its kind, if declared.
#[derive(Debug, Clone)]
enum Kind {
    Declared(PropKind),
    Undeclared,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Declared(k) => k.name(),
            Kind::Undeclared => "undeclared",
        }
    }
}

/// The declared props by event: the manifest's when there is one, otherwise
/// only the built-in events' props, which every manifest has.
fn declared(manifest: Option<&Manifest>) -> BTreeMap<String, BTreeMap<String, PropKind>> {
    let mut out: BTreeMap<String, BTreeMap<String, PropKind>> = BTreeMap::new();
    match manifest {
        Some(m) => {
            for (event, spec) in &m.events {
                let props = out.entry(event.clone()).or_default();
                for (name, prop) in &spec.props {
                    props.insert(name.clone(), prop.kind.clone());
                }
            }
        }
        None => {
            out.entry(builtin::ACTIVE.to_owned()).or_default().insert(
                builtin::ACTIVE_AGE_PROP.to_owned(),
                PropKind::Bucket {
                    bounds: builtin::ACTIVE_AGE_BOUNDS.to_vec(),
                    unit: Some("days".to_owned()),
                },
            );
        }
    }
    // Delivery health is a built-in of every manifest, so always declared.
    out.entry(builtin::DROPPED.to_owned()).or_default().insert(
        builtin::DROPPED_REASON_PROP.to_owned(),
        PropKind::Enum {
            values: builtin::DROPPED_REASONS.map(str::to_owned).to_vec(),
        },
    );
    out
}

fn value_text(v: &PropValue) -> String {
    crate::store::prop_value_text(v)
}

/// Sums per (event, prop, value) and per week, for one pass over the rows.
#[derive(Default)]
struct Acc {
    /// Events of the event, with or without the prop.
    events: u64,
    /// Per value: total and per-week counts.
    values: HashMap<String, (u64, Vec<u64>)>,
}

/// **The prop breakdowns** of every declared event and prop (declared props
/// with no data included, as zeros), and of every prop seen that no manifest
/// declares, over `from..=to`. Sorted by event, then prop. Distinct
/// installs come from `uses` (the `weekly_uses` rows of the window's weeks).
pub fn breakdowns(
    manifest: Option<&Manifest>,
    from: Day,
    to: Day,
    rows: &[PropCounterRow],
    uses: &[UseRow],
) -> Vec<PropBreakdown> {
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let weeks = weeks_of(from, to);
    let installs = WeeklyInstalls::of(&weeks, uses);
    let week_index = |d: Day| {
        ((d.week_start().days_since_epoch() - from.week_start().days_since_epoch()) / 7) as usize
    };
    let declared = declared(manifest);
    // Event totals, and the props each event's rows carry.
    let mut totals: HashMap<&str, u64> = HashMap::new();
    let mut accs: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for (event, props) in &declared {
        for prop in props.keys() {
            accs.insert((event.clone(), prop.clone()), Acc::default());
        }
    }
    // Parse each distinct props text once.
    let mut parsed: HashMap<&str, Props> = HashMap::new();
    for row in rows {
        if row.day < from || row.day > to {
            continue;
        }
        *totals.entry(row.event.as_str()).or_default() += row.count;
        let props = parsed
            .entry(row.props.as_str())
            .or_insert_with(|| serde_json::from_str(&row.props).unwrap_or_default());
        let w = week_index(row.day);
        for (name, value) in props.iter() {
            let acc = accs.entry((row.event.clone(), name.clone())).or_default();
            let slot = acc
                .values
                .entry(value_text(value))
                .or_insert_with(|| (0, vec![0; weeks.len()]));
            slot.0 += row.count;
            if let Some(c) = slot.1.get_mut(w) {
                *c += row.count;
            }
        }
    }
    accs.into_iter()
        .map(|((event, prop), mut acc)| {
            acc.events = totals.get(event.as_str()).copied().unwrap_or(0);
            let kind = declared
                .get(&event)
                .and_then(|p| p.get(&prop))
                .map_or(Kind::Undeclared, |k| Kind::Declared(k.clone()));
            finish(event, prop, &kind, acc, &weeks, &installs)
        })
        .collect()
}

/// The ISO weeks overlapping `from..=to`, as their Mondays.
pub(crate) fn weeks_of(from: Day, to: Day) -> Vec<Day> {
    let mut weeks = Vec::new();
    let mut w = from.week_start();
    while w <= to {
        weeks.push(w);
        w = w.add_days(7);
    }
    weeks
}

fn finish(
    event: String,
    prop: String,
    kind: &Kind,
    acc: Acc,
    weeks: &[Day],
    installs: &WeeklyInstalls,
) -> PropBreakdown {
    let mut values = acc.values;
    // Declared values with no data still get a row where the list is short
    // enough to show whole: "nobody uses fish" is an answer too.
    let listed: Vec<String> = match kind {
        Kind::Declared(PropKind::Bool) => vec!["true".into(), "false".into()],
        Kind::Declared(PropKind::Bucket { bounds, .. }) => bucket_labels(bounds),
        Kind::Declared(PropKind::Enum { values }) if values.len() <= TOP_VALUES => values.clone(),
        _ => Vec::new(),
    };
    for v in &listed {
        values
            .entry(v.clone())
            .or_insert_with(|| (0, vec![0; weeks.len()]));
    }
    let set: u64 = values.values().map(|(n, _)| n).sum();
    let folded_by_collector = values.remove(OTHER);
    let mut entries: Vec<(String, u64, Vec<u64>)> =
        values.into_iter().map(|(v, (n, w))| (v, n, w)).collect();
    // Which values are kept: the most frequent ones (every listed one for
    // bools and buckets, which are short and whose order is the point).
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let keep_all = matches!(
        kind,
        Kind::Declared(PropKind::Bool | PropKind::Bucket { .. })
    );
    let cut =
        if keep_all || entries.len() <= TOP_VALUES + usize::from(folded_by_collector.is_none()) {
            entries.len()
        } else {
            TOP_VALUES
        };
    let tail: Vec<(String, u64, Vec<u64>)> = entries.split_off(cut);
    sort_for_kind(kind, &listed, &mut entries);
    let mut folded = tail.iter().filter(|t| t.1 > 0).count() as u64;
    let mut other: Option<(u64, Vec<u64>)> = None;
    for (_, n, w) in tail.into_iter().chain(
        folded_by_collector
            .into_iter()
            .map(|(n, w)| (OTHER.to_owned(), n, w)),
    ) {
        let o = other.get_or_insert_with(|| (0, vec![0; weeks.len()]));
        o.0 += n;
        for (a, b) in o.1.iter_mut().zip(w) {
            *a += b;
        }
    }
    if other.is_some() && folded == 0 {
        folded = 1; // only the collector's own fold, one value as far as we know
    }
    let share = |n: u64| (set > 0).then(|| n as f64 / set as f64);
    let event_installs = installs.last(&installs.event(&event));
    let mut rows: Vec<ValueCount> = entries
        .iter()
        .map(|(v, n, _)| {
            let value_installs = installs.last(&installs.value(&event, &prop, v));
            ValueCount {
                value: v.clone(),
                count: *n,
                share: share(*n),
                installs: value_installs,
                install_share: install_share(value_installs, event_installs),
            }
        })
        .collect();
    // The series: the top values by count, shown in the order of `rows`.
    let mut by_count: Vec<&(String, u64, Vec<u64>)> = entries.iter().filter(|e| e.1 > 0).collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top: Vec<&str> = by_count
        .iter()
        .take(SERIES_VALUES)
        .map(|e| e.0.as_str())
        .collect();
    let mut series: Vec<ValueSeries> = Vec::new();
    let mut rest = vec![0u64; weeks.len()];
    let mut any_rest = false;
    for (v, n, w) in &entries {
        if top.contains(&v.as_str()) {
            series.push(ValueSeries {
                value: v.clone(),
                counts: w.clone(),
                installs: Some(installs.value(&event, &prop, v)),
            });
        } else if *n > 0 {
            any_rest = true;
            for (a, b) in rest.iter_mut().zip(w) {
                *a += b;
            }
        }
    }
    if let Some((n, w)) = &other {
        rows.push(ValueCount {
            value: OTHER.to_owned(),
            count: *n,
            share: share(*n),
            installs: None,
            install_share: None,
        });
        any_rest |= *n > 0;
        for (a, b) in rest.iter_mut().zip(w) {
            *a += b;
        }
    }
    if any_rest {
        series.push(ValueSeries {
            value: OTHER.to_owned(),
            counts: rest,
            installs: None,
        });
    }
    PropBreakdown {
        event,
        prop,
        kind: kind.name().to_owned(),
        events: acc.events,
        not_set: acc.events.saturating_sub(set),
        installs: event_installs,
        values: rows,
        folded,
        weeks: weeks.iter().map(|w| w.iso_week()).collect(),
        series,
    }
}

/// Puts the kept values in the kind's order.
fn sort_for_kind(kind: &Kind, listed: &[String], entries: &mut [(String, u64, Vec<u64>)]) {
    let pos = |v: &str| listed.iter().position(|l| l == v).unwrap_or(usize::MAX);
    match kind {
        Kind::Declared(PropKind::Bool | PropKind::Bucket { .. }) => entries.sort_by(|a, b| {
            pos(&a.0)
                .cmp(&pos(&b.0))
                .then_with(|| b.1.cmp(&a.1))
                .then_with(|| a.0.cmp(&b.0))
        }),
        Kind::Declared(PropKind::Version) => entries.sort_by(|a, b| semver_cmp(&a.0, &b.0)),
        // Enums and undeclared props: most frequent first, then declared order.
        _ => entries.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| pos(&a.0).cmp(&pos(&b.0)))
                .then_with(|| a.0.cmp(&b.0))
        }),
    }
}

/// A version's parts for ordering: numeric core, then whether it is a
/// release (a release sorts after its pre-releases), then the tag.
fn version_key(v: &str) -> Option<(Vec<u64>, bool, &str, u64)> {
    let (core, tag) = v.split_once('-').map_or((v, None), |(c, t)| (c, Some(t)));
    let mut nums: Vec<u64> = core
        .split('.')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<Vec<_>>>()?;
    if nums.is_empty() || nums.len() > 4 {
        return None;
    }
    nums.resize(4, 0);
    let (word, number) = match tag {
        None => ("", 0),
        Some(t) => {
            let end = t
                .bytes()
                .position(|b| b.is_ascii_digit() || b == b'.')
                .unwrap_or(t.len());
            let (w, rest) = t.split_at(end);
            (w, rest.trim_start_matches('.').parse::<u64>().unwrap_or(0))
        }
    };
    Some((nums, tag.is_none(), word, number))
}

/// **Semver order**: `1.9 < 1.10 < 2.0.0-rc.1 < 2.0.0`; `1.2` equals
/// `1.2.0` numerically and sorts by text after that. Anything that is not a
/// version sorts after every version, by text, and [`OTHER`] last of all.
pub fn semver_cmp(a: &str, b: &str) -> Ordering {
    match (a == OTHER, b == OTHER) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    match (version_key(a), version_key(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn row(d: &str, event: &str, props: &str, count: u64) -> PropCounterRow {
        PropCounterRow {
            day: day(d),
            event: event.into(),
            props: props.into(),
            count,
        }
    }

    const MANIFEST: &str = r#"
project = "p"
endpoint = "http://127.0.0.1:9"

[events.init]
description = "init"
min_tier = "aggregate"
props.shell = { kind = "enum", values = ["bash", "zsh", "fish"], description = "shell" }
props.ci = { kind = "bool", description = "in CI" }
props.took = { kind = "bucket", bounds = [100, 1000], unit = "ms", description = "time" }
props.from = { kind = "version", description = "previous version" }

[events.query]
description = "query"
min_tier = "aggregate"
props.mode = { kind = "enum", values = ["a","b","c","d","e","f","g","h","i","j","k","l","m"], description = "mode" }
"#;

    fn find<'a>(all: &'a [PropBreakdown], event: &str, prop: &str) -> &'a PropBreakdown {
        all.iter()
            .find(|b| b.event == event && b.prop == prop)
            .unwrap_or_else(|| panic!("{event}.{prop} in {all:?}"))
    }

    fn values(b: &PropBreakdown) -> Vec<(&str, u64)> {
        b.values
            .iter()
            .map(|v| (v.value.as_str(), v.count))
            .collect()
    }

    #[test]
    fn every_kind_in_its_order_with_declared_zeros_and_not_set() {
        let m = Manifest::parse(MANIFEST).unwrap();
        // 2026-11-16 is a Monday.
        let rows = vec![
            row(
                "2026-11-16",
                "init",
                r#"{"ci":true,"shell":"zsh","took":">=1000"}"#,
                3,
            ),
            row(
                "2026-11-17",
                "init",
                r#"{"ci":false,"shell":"bash","took":"<100"}"#,
                5,
            ),
            row(
                "2026-11-23",
                "init",
                r#"{"shell":"zsh","took":"100..1000","from":"1.10.0"}"#,
                4,
            ),
            row("2026-11-23", "init", r#"{"from":"1.9.2"}"#, 1),
            row("2026-11-23", "init", r#"{"from":"2.0.0-rc.1"}"#, 1),
            row("2026-11-23", "init", r#"{"from":"2.0.0"}"#, 2),
            row("2026-11-23", "init", "{}", 2),
            row("2026-11-30", "init", r#"{"shell":"bash"}"#, 100), // after the window
        ];
        let all = breakdowns(Some(&m), day("2026-11-16"), day("2026-11-29"), &rows, &[]);
        let shell = find(&all, "init", "shell");
        assert_eq!(shell.kind, "enum");
        assert_eq!(shell.events, 18);
        assert_eq!(shell.not_set, 6);
        assert_eq!(values(shell), [("zsh", 7), ("bash", 5), ("fish", 0)]);
        assert_eq!(shell.values[0].share, Some(7.0 / 12.0));
        assert_eq!(shell.weeks.len(), 2);
        assert_eq!(shell.series[0].value, "zsh");
        assert_eq!(shell.series[0].counts, [3, 4]);
        assert_eq!(shell.series[1].counts, [5, 0]);
        assert_eq!(shell.series.len(), 2, "no series for values never sent");
        let ci = find(&all, "init", "ci");
        assert_eq!(values(ci), [("true", 3), ("false", 5)]);
        let took = find(&all, "init", "took");
        assert_eq!(
            values(took),
            [("<100", 5), ("100..1000", 4), (">=1000", 3)],
            "bucket order, not count order"
        );
        let from = find(&all, "init", "from");
        assert_eq!(
            values(from),
            [("1.9.2", 1), ("1.10.0", 4), ("2.0.0-rc.1", 1), ("2.0.0", 2)],
            "semver order"
        );
        // Built-in events' props are always there, even with no data.
        let reason = find(&all, builtin::DROPPED, builtin::DROPPED_REASON_PROP);
        assert_eq!(reason.values.len(), builtin::DROPPED_REASONS.len());
        assert!(reason.series.is_empty());
        let age = find(&all, builtin::ACTIVE, builtin::ACTIVE_AGE_PROP);
        assert_eq!(age.kind, "bucket");
        assert_eq!(age.values[0].value, "<7");
    }

    #[test]
    fn the_long_tail_folds_into_other_with_the_collectors_own_fold() {
        let m = Manifest::parse(MANIFEST).unwrap();
        let mut rows: Vec<PropCounterRow> = "abcdefghijklm"
            .chars()
            .enumerate()
            .map(|(i, c)| {
                row(
                    "2026-11-18",
                    "query",
                    &format!(r#"{{"mode":"{c}"}}"#),
                    100 - i as u64,
                )
            })
            .collect();
        rows.push(row("2026-11-18", "query", r#"{"mode":"(other)"}"#, 7));
        rows.push(row("2026-11-18", "query", r#"{"undeclared":"x"}"#, 2));
        let all = breakdowns(Some(&m), day("2026-11-16"), day("2026-11-22"), &rows, &[]);
        let mode = find(&all, "query", "mode");
        assert_eq!(mode.values.len(), TOP_VALUES + 1);
        assert_eq!(mode.values[0].value, "a");
        let other = mode.values.last().unwrap();
        assert_eq!(other.value, OTHER);
        // k, l, m (90 + 89 + 88) and the collector's 7.
        assert_eq!(other.count, 90 + 89 + 88 + 7);
        assert_eq!(mode.folded, 3);
        assert_eq!(mode.series.len(), SERIES_VALUES + 1);
        assert_eq!(mode.series.last().unwrap().value, OTHER);
        let total: u64 = mode.series.iter().map(|s| s.counts[0]).sum();
        assert_eq!(total, mode.values.iter().map(|v| v.count).sum::<u64>());
        let undeclared = find(&all, "query", "undeclared");
        assert_eq!(undeclared.kind, "undeclared");
        assert_eq!(values(undeclared), [("x", 2)]);
    }

    #[test]
    fn without_a_manifest_props_seen_are_shown_undeclared() {
        let rows = vec![row("2026-11-18", "cmd", r#"{"name":"<b>x</b>"}"#, 2)];
        let all = breakdowns(None, day("2026-11-16"), day("2026-11-22"), &rows, &[]);
        let name = find(&all, "cmd", "name");
        assert_eq!(name.kind, "undeclared");
        assert_eq!(values(name), [("<b>x</b>", 2)]);
    }

    #[test]
    fn semver_order() {
        let mut v = vec![
            "2.0.0",
            "(other)",
            "1.10",
            "1.9.3",
            "dev",
            "2.0.0-beta.2",
            "2.0.0-rc.1",
            "1.2",
            "1.2.0",
            "2.0.0-beta.10",
            "10.0",
        ];
        v.sort_by(|a, b| semver_cmp(a, b));
        assert_eq!(
            v,
            [
                "1.2",
                "1.2.0",
                "1.9.3",
                "1.10",
                "2.0.0-beta.2",
                "2.0.0-beta.10",
                "2.0.0-rc.1",
                "2.0.0",
                "10.0",
                "dev",
                "(other)"
            ]
        );
    }
}
