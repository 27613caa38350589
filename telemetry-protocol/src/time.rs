//! UTC days, ISO weeks and millisecond timestamps, without a date library.
//!
//! The protocol only needs three things from a calendar: the UTC day of a
//! moment (counters are summed per day), the ISO week of a day (`active` is sent
//! once per week), and a stable text form for each. Howard Hinnant's
//! `days_from_civil` algorithms do all of it in a few lines of integer
//! arithmetic, which keeps this crate free of a date dependency that every host
//! CLI would otherwise pay for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MILLIS_PER_DAY: i64 = 86_400_000;
/// The earliest and latest years the text forms accept; four-digit years keep
/// the text forms sortable and fixed-width.
const MIN_YEAR: i64 = 1970;
const MAX_YEAR: i64 = 9999;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // The casts cannot truncate: day is 1..=31 and month is 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// The error for a day, week or timestamp that is not in its text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {what} (expected {expected})")]
pub struct ParseTimeError {
    input: String,
    what: &'static str,
    expected: &'static str,
}

impl ParseTimeError {
    fn new(input: &str, what: &'static str, expected: &'static str) -> Self {
        // Cap what is echoed back: the input may be hostile and large.
        let input = input.chars().take(40).collect();
        Self {
            input,
            what,
            expected,
        }
    }
}

/// Parses a run of one to nine ASCII digits. It works on bytes, so the text
/// forms below slice byte ranges and never a `str`: slicing hostile text at a
/// byte offset inside a multi-byte character would panic.
fn digits(b: &[u8]) -> Option<i64> {
    (!b.is_empty() && b.len() <= 9 && b.iter().all(u8::is_ascii_digit))
        .then(|| b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// A UTC calendar day, written `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i32);

impl Day {
    /// The day a number of days after 1970-01-01.
    pub const fn from_days_since_epoch(days: i32) -> Day {
        Day(days)
    }

    /// Days since 1970-01-01.
    pub const fn days_since_epoch(self) -> i32 {
        self.0
    }

    /// The day of a calendar date, or `None` if the date does not exist or is
    /// outside the years 1970 to 9999.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        let year = i64::from(year);
        let valid = (MIN_YEAR..=MAX_YEAR).contains(&year)
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day);
        valid.then(|| Day(days_from_civil(year, month, day) as i32))
    }

    /// The `(year, month, day)` of this day.
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        (y as i32, m, d)
    }

    /// The day `n` days later (or earlier, for negative `n`).
    pub const fn add_days(self, n: i32) -> Day {
        Day(self.0 + n)
    }

    /// The ISO weekday, Monday = 1 through Sunday = 7.
    pub fn iso_weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (weekday 4).
        (i64::from(self.0) + 3).rem_euclid(7) as u32 + 1
    }

    /// The Monday that starts this day's ISO week.
    pub fn week_start(self) -> Day {
        Day(self.0 - (self.iso_weekday() as i32 - 1))
    }

    /// `YYYY-MM-DD` from bytes; `None` for anything else.
    fn parse_bytes(b: &[u8]) -> Option<Day> {
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        Day::from_ymd(year as i32, month as u32, day as u32)
    }

    /// The ISO 8601 week this day belongs to.
    pub fn iso_week(self) -> IsoWeek {
        // The ISO year of a week is the calendar year of its Thursday.
        let thursday = self.week_start().add_days(3);
        let (year, _, _) = thursday.ymd();
        let jan1 = days_from_civil(i64::from(year), 1, 1);
        let week = ((i64::from(thursday.0) - jan1) / 7 + 1) as u32;
        IsoWeek { year, week }
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = ParseTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTimeError::new(s, "day", "YYYY-MM-DD");
        Day::parse_bytes(s.as_bytes()).ok_or_else(err)
    }
}

/// An ISO 8601 week, written `YYYY-Www`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsoWeek {
    /// The ISO week-numbering year, which differs from the calendar year around New Year.
    pub year: i32,
    /// The week number, 1 to 53.
    pub week: u32,
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl FromStr for IsoWeek {
    type Err = ParseTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTimeError::new(s, "ISO week", "YYYY-Www");
        let b = s.as_bytes();
        if b.len() != 8 || &b[4..6] != b"-W" {
            return Err(err());
        }
        let year = digits(&b[0..4]).ok_or_else(err)? as i32;
        let week = digits(&b[6..8]).ok_or_else(err)? as u32;
        // A year has week 53 exactly when its 28 December falls in week 53.
        let last = Day::from_ymd(year, 12, 28).ok_or_else(err)?.iso_week().week;
        if !(1..=last).contains(&week) {
            return Err(err());
        }
        Ok(IsoWeek { year, week })
    }
}

/// A moment in UTC with millisecond precision, written `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The moment a number of milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The UTC day this moment falls on.
    pub fn day(self) -> Day {
        Day(self.0.div_euclid(MILLIS_PER_DAY) as i32)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms_of_day = self.0.rem_euclid(MILLIS_PER_DAY);
        let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (m, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        write!(f, "{}T{h:02}:{m:02}:{s:02}.{ms:03}Z", self.day())
    }
}

impl FromStr for Timestamp {
    type Err = ParseTimeError;

    /// Accepts RFC 3339 in UTC only (`Z`), with zero to three fraction digits.
    /// Offsets are refused rather than converted so that every stored time has
    /// one obvious form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTimeError::new(s, "timestamp", "YYYY-MM-DDTHH:MM:SS[.mmm]Z");
        let b = s.as_bytes();
        if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || !s.ends_with('Z') {
            return Err(err());
        }
        let day = Day::parse_bytes(&b[..10]).ok_or_else(err)?;
        let h = digits(&b[11..13]).filter(|h| *h < 24).ok_or_else(err)?;
        let m = digits(&b[14..16]).filter(|m| *m < 60).ok_or_else(err)?;
        let sec = digits(&b[17..19]).filter(|s| *s < 60).ok_or_else(err)?;
        let frac = &b[19..b.len() - 1];
        let ms = match frac {
            [] => 0,
            [b'.', d @ ..] if (1..=3).contains(&d.len()) => {
                digits(d).ok_or_else(err)? * 10_i64.pow(3 - d.len() as u32)
            }
            _ => return Err(err()),
        };
        let millis = i64::from(day.0) * MILLIS_PER_DAY + ((h * 60 + m) * 60 + sec) * 1000 + ms;
        Ok(Timestamp(millis))
    }
}

macro_rules! serde_via_text {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_via_text!(Day, IsoWeek, Timestamp);

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(day("1970-01-01").days_since_epoch(), 0);
        assert_eq!(day("2000-03-01").days_since_epoch(), 11_017);
        assert_eq!(day("2026-11-21").days_since_epoch(), 20_778);
        assert_eq!(Day::from_days_since_epoch(20_778).to_string(), "2026-11-21");
    }

    #[test]
    fn every_day_round_trips_through_text() {
        for n in 0..=(day("2101-01-01").days_since_epoch()) {
            let d = Day::from_days_since_epoch(n);
            assert_eq!(d.to_string().parse::<Day>(), Ok(d));
        }
    }

    #[test]
    fn invalid_days_are_refused() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "1969-12-31",
            "2026-1-01",
            "20261121",
            "2026-11-21 ",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
        assert!("2024-02-29".parse::<Day>().is_ok());
    }

    #[test]
    fn iso_weeks_match_the_standard_at_year_boundaries() {
        // (day, ISO week) pairs checked against ISO 8601 calendars.
        let table = [
            ("2026-11-21", "2026-W47"),
            ("2026-11-23", "2026-W48"),
            ("2021-01-03", "2020-W53"),
            ("2021-01-04", "2021-W01"),
            ("2024-12-30", "2025-W01"),
            ("2027-01-01", "2026-W53"),
            ("2015-12-31", "2015-W53"),
            ("1970-01-01", "1970-W01"),
        ];
        for (d, w) in table {
            assert_eq!(day(d).iso_week().to_string(), w, "{d}");
            assert_eq!(w.parse::<IsoWeek>().unwrap(), day(d).iso_week());
        }
        assert!("2025-W53".parse::<IsoWeek>().is_err());
        assert!("2026-W53".parse::<IsoWeek>().is_ok());
    }

    #[test]
    fn weekdays() {
        assert_eq!(day("1970-01-01").iso_weekday(), 4);
        assert_eq!(day("2026-11-21").iso_weekday(), 6);
        assert_eq!(day("2026-11-21").week_start(), day("2026-11-16"));
    }

    #[test]
    fn timestamps_round_trip_and_fall_on_their_utc_day() {
        let ts: Timestamp = "2026-11-21T23:59:59.999Z".parse().unwrap();
        assert_eq!(ts.day(), day("2026-11-21"));
        assert_eq!(
            Timestamp::from_unix_millis(ts.unix_millis() + 1).day(),
            day("2026-11-22")
        );
        assert_eq!(ts.to_string(), "2026-11-21T23:59:59.999Z");
        let whole: Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
        assert_eq!(whole.to_string(), "2026-11-21T10:00:00.000Z");
        let tenth: Timestamp = "2026-11-21T10:00:00.5Z".parse().unwrap();
        assert_eq!(tenth.unix_millis() - whole.unix_millis(), 500);
    }

    #[test]
    fn timestamps_refuse_offsets_and_junk() {
        for bad in [
            "2026-11-21T10:00:00+01:00",
            "2026-11-21T24:00:00Z",
            "2026-11-21T10:00:00.1234Z",
            "2026-11-21T10:00:00.Z",
            "2026-11-21 10:00:00Z",
            "",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parsers_are_total_on_non_ascii_input() {
        // Multi-byte characters where the parsers slice: each used to panic
        // on a char boundary instead of returning an error.
        for bad in [
            "2026-11-21T10:00:0\u{e9}Z",
            "2026-11-21T1\u{e9}:00:00Z",
            "2026-11-21T10:00:00.\u{e9}Z",
            "2026-11-21T10:00:00\u{e9}Z",
            "2026-11-21T\u{e9}0:00:00Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        for bad in [
            "202\u{e9}-W01",
            "2026\u{e9}W1",
            "2026-W\u{e9}",
            "\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert!(bad.parse::<IsoWeek>().is_err(), "{bad}");
        }
        for bad in [
            "2026-11-2\u{e9}",
            "2\u{e9}6-11-21",
            "2026-\u{e9}-211",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_uses_the_text_forms() {
        let d = day("2026-11-21");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2026-11-21\"");
        assert_eq!(serde_json::from_str::<Day>("\"2026-11-21\"").unwrap(), d);
        assert!(serde_json::from_str::<Day>("\"2026-11-31\"").is_err());
        let w = d.iso_week();
        assert_eq!(
            serde_json::from_str::<IsoWeek>(&serde_json::to_string(&w).unwrap()).unwrap(),
            w
        );
    }
}
