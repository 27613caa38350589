//! The date range of a project page or export: `?from=YYYY-MM-DD&to=YYYY-MM-DD&by=day|week`.
//!
//! The range picker is a plain GET form, so an empty field arrives as an empty
//! string; that means "the default", not an error.

use serde::Deserialize;
use telemetry_protocol::Day;

/// The window shown when the query names none: the last 30 days, today included.
pub const DEFAULT_DAYS: i32 = 30;
/// The longest window a page or export may ask for, so one request cannot make
/// the collector build a series of millions of points.
pub const MAX_DAYS: i32 = 3660;
/// Windows up to this many days are shown per day by default; longer ones per week.
pub const DAILY_UP_TO: i32 = 92;

/// The query string as it arrives.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeQuery {
    /// The first day, `YYYY-MM-DD`.
    #[serde(default)]
    pub from: Option<String>,
    /// The last day, inclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// `day` or `week`.
    #[serde(default)]
    pub by: Option<String>,
}

/// How the time-series chart groups its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One point per UTC day.
    Day,
    /// One point per ISO week.
    Week,
}

impl Granularity {
    /// The query-string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
        }
    }
}

/// A checked, inclusive window of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first day.
    pub from: Day,
    /// The last day, inclusive.
    pub to: Day,
    /// How the time series is grouped.
    pub by: Granularity,
}

impl Range {
    /// The number of days in the window.
    pub fn days(&self) -> i32 {
        self.to.days_since_epoch() - self.from.days_since_epoch() + 1
    }
}

/// Why a range query was refused; the message is safe to show (it never echoes the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// `from` is not a date.
    #[error("`from` must be a date written YYYY-MM-DD")]
    BadFrom,
    /// `to` is not a date.
    #[error("`to` must be a date written YYYY-MM-DD")]
    BadTo,
    /// `from` is after `to`.
    #[error("`from` must not be after `to`")]
    Reversed,
    /// The window is longer than [`MAX_DAYS`].
    #[error("the range may span at most {MAX_DAYS} days")]
    TooLong,
    /// `by` is neither `day` nor `week`.
    #[error("`by` must be `day` or `week`")]
    BadGranularity,
}

fn field(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl RangeQuery {
    /// Checks the query, filling what is missing: `to` defaults to `today`, `from`
    /// to [`DEFAULT_DAYS`] before `to`, and `by` to days for short windows.
    pub fn resolve(&self, today: Day) -> Result<Range, RangeError> {
        let to = match field(&self.to) {
            Some(s) => s.parse::<Day>().map_err(|_| RangeError::BadTo)?,
            None => today,
        };
        let from = match field(&self.from) {
            Some(s) => s.parse::<Day>().map_err(|_| RangeError::BadFrom)?,
            None => to.add_days(1 - DEFAULT_DAYS),
        };
        if from > to {
            return Err(RangeError::Reversed);
        }
        let days = to.days_since_epoch() - from.days_since_epoch() + 1;
        if days > MAX_DAYS {
            return Err(RangeError::TooLong);
        }
        let by = match field(&self.by) {
            Some("day") => Granularity::Day,
            Some("week") => Granularity::Week,
            Some(_) => return Err(RangeError::BadGranularity),
            None if days <= DAILY_UP_TO => Granularity::Day,
            None => Granularity::Week,
        };
        Ok(Range { from, to, by })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: &str, to: &str, by: &str) -> RangeQuery {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        RangeQuery {
            from: opt(from),
            to: opt(to),
            by: opt(by),
        }
    }

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_resolve_or_are_refused() {
        let today = day("2026-11-21");
        let ok = [
            (
                q("", "", ""),
                ("2026-10-23", "2026-11-21", Granularity::Day),
            ),
            (
                q("2026-11-01", "2026-11-07", ""),
                ("2026-11-01", "2026-11-07", Granularity::Day),
            ),
            (
                q("2026-01-01", "", ""),
                ("2026-01-01", "2026-11-21", Granularity::Week),
            ),
            (
                q("", "2026-06-30", "week"),
                ("2026-06-01", "2026-06-30", Granularity::Week),
            ),
            (
                q("2026-11-21", "2026-11-21", "day"),
                ("2026-11-21", "2026-11-21", Granularity::Day),
            ),
        ];
        for (query, (from, to, by)) in ok {
            let range = query.resolve(today).unwrap();
            assert_eq!((range.from, range.to, range.by), (day(from), day(to), by));
        }
        let refused = [
            (q("yesterday", "", ""), RangeError::BadFrom),
            (q("", "2026-02-30", ""), RangeError::BadTo),
            (q("2026-11-02", "2026-11-01", ""), RangeError::Reversed),
            (q("1990-01-01", "2026-01-01", ""), RangeError::TooLong),
            (q("", "", "month"), RangeError::BadGranularity),
        ];
        for (query, err) in refused {
            assert_eq!(query.resolve(today), Err(err));
        }
    }

    #[test]
    fn errors_never_echo_the_input() {
        let err = q("<script>", "", "")
            .resolve(day("2026-11-21"))
            .unwrap_err();
        assert!(!err.to_string().contains("<script>"));
    }
}
