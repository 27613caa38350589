//! Distinct installs by ISO week, from the `weekly_uses` rows kept at
//! ingest ([`UseRow`]): per event, per prop value, and "sent anything". Only
//! data sent at `anonymous` or `full` has installs; aggregate counters have
//! none, so these numbers say nothing about installs at `aggregate`.
//!
//! Distinct installs are counted per week. Over a longer window they do not
//! add up (one install active in two weeks is one install, not two), so
//! every figure here is of one week: the window's last for the single
//! numbers, each week for the series.

use std::collections::HashMap;

use telemetry_protocol::Day;

use crate::store::UseRow;

/// Weekly distinct installs over a list of weeks (their Mondays).
#[derive(Debug, Default)]
pub(crate) struct WeeklyInstalls {
    /// How many weeks each series has.
    len: usize,
    /// Installs that sent anything, per week.
    any: Vec<u64>,
    /// Per event: installs that sent it, per week.
    events: HashMap<String, Vec<u64>>,
    /// Per (event, prop) and value: installs that sent it, per week.
    values: HashMap<(String, String), HashMap<String, Vec<u64>>>,
}

impl WeeklyInstalls {
    /// Sums `rows` into one series per week of `weeks`; rows of other weeks are ignored.
    pub(crate) fn of(weeks: &[Day], rows: &[UseRow]) -> WeeklyInstalls {
        let len = weeks.len();
        let mut out = WeeklyInstalls {
            len,
            any: vec![0; len],
            ..WeeklyInstalls::default()
        };
        for row in rows {
            let Some(w) = weeks.iter().position(|d| *d == row.week) else {
                continue;
            };
            let slot = if row.is_any() {
                &mut out.any
            } else if row.prop.is_empty() {
                out.events
                    .entry(row.event.clone())
                    .or_insert_with(|| vec![0; len])
            } else {
                out.values
                    .entry((row.event.clone(), row.prop.clone()))
                    .or_default()
                    .entry(row.value.clone())
                    .or_insert_with(|| vec![0; len])
            };
            slot[w] += row.installs;
        }
        out
    }

    /// Whether any install sent anything at `anonymous` or `full` in the last week.
    pub(crate) fn last_week_known(&self) -> bool {
        self.any.last().is_some_and(|n| *n > 0)
    }

    /// Installs that sent anything, per week.
    pub(crate) fn any(&self) -> &[u64] {
        &self.any
    }

    /// Installs that sent `event`, per week (zeros if none).
    pub(crate) fn event(&self, event: &str) -> Vec<u64> {
        self.events
            .get(event)
            .cloned()
            .unwrap_or_else(|| vec![0; self.len])
    }

    /// Installs that sent `event` with `prop = value`, per week (zeros if none).
    pub(crate) fn value(&self, event: &str, prop: &str, value: &str) -> Vec<u64> {
        self.values
            .get(&(event.to_owned(), prop.to_owned()))
            .and_then(|v| v.get(value))
            .cloned()
            .unwrap_or_else(|| vec![0; self.len])
    }

    /// The last week's figure of `series`, or `None` when that week has no
    /// installs at `anonymous` or `full` at all.
    pub(crate) fn last(&self, series: &[u64]) -> Option<u64> {
        self.last_week_known()
            .then(|| series.last().copied().unwrap_or(0))
    }
}

/// `part / whole`, `None` unless both are known and `whole > 0`.
pub(crate) fn share(part: Option<u64>, whole: Option<u64>) -> Option<f64> {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => Some(p as f64 / w as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn row(week: &str, event: &str, prop: &str, value: &str, installs: u64) -> UseRow {
        UseRow {
            week: day(week),
            event: event.into(),
            prop: prop.into(),
            value: value.into(),
            installs,
        }
    }

    #[test]
    fn weekly_series_by_event_and_value_and_the_last_week() {
        let weeks = [day("2026-11-16"), day("2026-11-23")];
        let rows = [
            row("2026-11-16", "", "", "", 9),
            row("2026-11-23", "", "", "", 7),
            row("2026-11-16", "init", "", "", 4),
            row("2026-11-23", "init", "shell", "zsh", 3),
            row("2026-11-09", "init", "shell", "zsh", 100), // not a week asked for
        ];
        let w = WeeklyInstalls::of(&weeks, &rows);
        assert_eq!(w.any(), [9, 7]);
        assert_eq!(w.event("init"), [4, 0]);
        assert_eq!(w.value("init", "shell", "zsh"), [0, 3]);
        assert_eq!(w.value("init", "shell", "fish"), [0, 0]);
        assert_eq!(w.last(&w.value("init", "shell", "zsh")), Some(3));
        assert_eq!(share(Some(3), Some(7)), Some(3.0 / 7.0));
        let none = WeeklyInstalls::of(&weeks, &rows[..1]);
        assert_eq!(
            none.last(&none.event("init")),
            None,
            "no installs last week"
        );
        assert_eq!(share(Some(1), Some(0)), None);
    }
}
