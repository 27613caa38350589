//! Delivery health: what clients reported dropping (the `telemetry_dropped`
//! counters, by its `reason` prop) and what the collector refused,
//! downgraded or ignored (its `refusals` table), summed into one sentence a
//! maintainer reads before trusting the rest of the page.
//!
//! Retries come from `daily_uploads`: an upload that carried anything
//! already stored was sent again by a client that never saw the first
//! answer (see [`crate::store::UploadRow`] for what counts and what not).

use std::collections::{BTreeMap, HashMap};

use telemetry_protocol::manifest::builtin;
use telemetry_protocol::{Day, PropValue, Props};

use crate::report::{DeliveryHealth, ReasonCount, RefusalCount, VersionCount};
use crate::store::{PropCounterRow, RefusalRow, StatsInput, UploadRow};

/// The client's reason for items the collector refused inside an accepted
/// payload: the collector counts those itself, so they are not added twice.
const REFUSED_ITEMS: &str = "refused_items";
/// One (reason, version) of `refusals`: its count and its count per detail.
type Group<'a> = (u64, HashMap<&'a str, u64>);

/// Details listed per refusal row.
const DETAILS: usize = 5;

fn is_downgrade(reason: &str) -> bool {
    reason.starts_with("downgraded_")
}

fn is_ignored(reason: &str) -> bool {
    reason == "ignored_field"
}

/// A share as the summary writes it.
fn share_words(share: f64) -> String {
    if share < 0.001 {
        "less than 0.1%".to_owned()
    } else {
        format!("about {:.1}%", share * 100.0)
    }
}

/// `text` with its first letter in upper case, to start a sentence.
fn capitalized(mut text: String) -> String {
    if let Some(first) = text.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    text
}

/// **Delivery health** over `from..=to`, and the summary of the ISO week of
/// `to`. `props`, `refusals` and `uploads` must cover both the window and that week.
pub fn delivery_health(
    from: Day,
    to: Day,
    input: &StatsInput,
    props: &[PropCounterRow],
    refusals: &[RefusalRow],
    uploads: &[UploadRow],
) -> DeliveryHealth {
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let week = to.week_start();
    let in_window = |d: Day| from <= d && d <= to;
    let in_week = |d: Day| week <= d && d <= to;

    let (mut received, mut week_received) = (0u64, 0u64);
    let mut by_version: HashMap<&str, u64> = HashMap::new();
    for row in &input.counters {
        if row.event == builtin::DROPPED {
            if in_window(row.day) {
                *by_version.entry(row.version.as_str()).or_default() += row.count;
            }
            continue;
        }
        if in_window(row.day) {
            received += row.count;
        }
        if in_week(row.day) {
            week_received += row.count;
        }
    }

    let mut dropped: BTreeMap<String, u64> = builtin::DROPPED_REASONS
        .iter()
        .map(|r| ((*r).to_owned(), 0))
        .collect();
    let (mut missing_dropped, mut week_missing_dropped) = (0u64, 0u64);
    for row in props.iter().filter(|r| r.event == builtin::DROPPED) {
        let parsed: Props = serde_json::from_str(&row.props).unwrap_or_default();
        let reason = match parsed.get(builtin::DROPPED_REASON_PROP) {
            Some(PropValue::Token(t)) => t.clone(),
            Some(PropValue::Bool(b)) => b.to_string(),
            None => "(not set)".to_owned(),
        };
        let counts = reason != REFUSED_ITEMS;
        if in_window(row.day) {
            *dropped.entry(reason).or_default() += row.count;
            if counts {
                missing_dropped += row.count;
            }
        }
        if in_week(row.day) && counts {
            week_missing_dropped += row.count;
        }
    }

    let (mut refused_n, mut week_refused, mut week_downgraded) = (0u64, 0u64, 0u64);
    let mut groups: BTreeMap<(String, String), Group<'_>> = BTreeMap::new();
    for r in refusals {
        let kind_is_refusal = !is_downgrade(&r.reason) && !is_ignored(&r.reason);
        if in_week(r.day) {
            if kind_is_refusal {
                week_refused += r.count;
            } else if is_downgrade(&r.reason) {
                week_downgraded += r.count;
            }
        }
        if !in_window(r.day) {
            continue;
        }
        if kind_is_refusal {
            refused_n += r.count;
        }
        let g = groups
            .entry((r.reason.clone(), r.version.clone()))
            .or_default();
        g.0 += r.count;
        if !r.detail.is_empty() {
            *g.1.entry(r.detail.as_str()).or_default() += r.count;
        }
    }
    let (mut refused, mut downgraded, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
    for ((reason, version), (count, details)) in groups {
        let mut details: Vec<(&str, u64)> = details.into_iter().collect();
        details.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let row = RefusalCount {
            details: details
                .into_iter()
                .take(DETAILS)
                .map(|(d, _)| d.to_owned())
                .collect(),
            reason,
            version,
            count,
        };
        if is_downgrade(&row.reason) {
            downgraded.push(row);
        } else if is_ignored(&row.reason) {
            ignored.push(row);
        } else {
            refused.push(row);
        }
    }
    for list in [&mut refused, &mut downgraded, &mut ignored] {
        list.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.reason.cmp(&b.reason))
                .then_with(|| a.version.cmp(&b.version))
        });
    }

    let missing = missing_dropped + refused_n;
    let week_missing = week_missing_dropped + week_refused;
    let share = |missing: u64, received: u64| {
        let all = missing + received;
        (all > 0).then(|| missing as f64 / all as f64)
    };
    let week_missing_share = share(week_missing, week_received);
    let iso = week.iso_week();
    let mut summary = match week_missing_share {
        None => format!("No data arrived this week ({iso})."),
        Some(_) if week_missing == 0 => {
            format!("No events are known to be missing this week ({iso}).")
        }
        Some(s) => {
            let text = capitalized(share_words(s));
            format!(
                "{text} of events are known to be missing this week ({iso}): \
                 {week_missing_dropped} dropped by clients, {week_refused} refused by the collector."
            )
        }
    };
    match week_downgraded {
        0 => {}
        1 => summary.push_str(" 1 more item was kept at a lower tier than sent."),
        n => summary.push_str(&format!(" {n} more were kept at a lower tier than sent.")),
    }
    let (mut n_uploads, mut retries, mut replayed) = (0u64, 0u64, 0u64);
    let (mut week_uploads, mut week_retries) = (0u64, 0u64);
    for u in uploads {
        if in_window(u.day) {
            n_uploads += u.uploads;
            retries += u.retries;
            replayed += u.replayed;
        }
        if in_week(u.day) {
            week_uploads += u.uploads;
            week_retries += u.retries;
        }
    }
    let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    let week_retry_share = ratio(week_retries, week_uploads);
    if let Some(s) = week_retry_share.filter(|_| week_retries > 0) {
        let noun = if week_uploads == 1 {
            "upload"
        } else {
            "uploads"
        };
        summary.push_str(&format!(
            " {} of {week_uploads} {noun} this week were retries.",
            capitalized(share_words(s))
        ));
    }
    let mut dropped: Vec<ReasonCount> = dropped
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    dropped.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    let mut dropped_by_version: Vec<VersionCount> = by_version
        .into_iter()
        .map(|(v, count)| VersionCount {
            version: v.to_owned(),
            count,
        })
        .collect();
    dropped_by_version.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| super::props::semver_cmp(&a.version, &b.version))
    });
    DeliveryHealth {
        summary,
        week: Some(iso),
        week_received,
        week_missing,
        week_missing_share,
        received,
        missing,
        missing_share: share(missing, received),
        dropped,
        dropped_by_version,
        refused,
        downgraded,
        ignored,
        uploads: n_uploads,
        retries,
        retry_share: ratio(retries, n_uploads),
        replayed,
        week_uploads,
        week_retries,
        week_retry_share,
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

    fn counter(d: &str, event: &str, version: &str, count: u64) -> CounterRow {
        CounterRow::on_linux(day(d), event, version, Tier::Aggregate, count)
    }

    fn dropped(d: &str, reason: &str, count: u64) -> PropCounterRow {
        PropCounterRow {
            day: day(d),
            event: builtin::DROPPED.into(),
            props: format!(r#"{{"reason":"{reason}"}}"#),
            count,
        }
    }

    fn refusal(d: &str, version: &str, reason: &str, detail: &str, count: u64) -> RefusalRow {
        RefusalRow {
            day: day(d),
            version: version.into(),
            reason: reason.into(),
            detail: detail.into(),
            count,
        }
    }

    #[test]
    fn missing_counts_drops_and_refusals_once_and_says_so_in_a_sentence() {
        // The week of `to` (2026-11-25) starts on Monday 2026-11-23.
        let input = StatsInput {
            counters: vec![
                counter("2026-11-18", "command", "1.0", 500),
                counter("2026-11-24", "command", "1.0", 990),
                counter("2026-11-24", builtin::DROPPED, "1.0", 7),
                counter("2026-11-24", builtin::DROPPED, "0.9", 3),
            ],
            ..StatsInput::default()
        };
        let props = [
            dropped("2026-11-24", "outbox_full", 4),
            dropped("2026-11-24", "refused_items", 5), // also in refusals
            dropped("2026-11-24", "io_error", 1),
        ];
        let refusals = [
            refusal("2026-11-24", "1.0", "unknown_event", "deploy", 3),
            refusal("2026-11-24", "1.0", "unknown_event", "lint", 2),
            refusal("2026-11-24", "0.9", "downgraded_full_to_anonymous", "", 6),
            refusal("2026-11-24", "0.9", "ignored_field", "context.gpu", 2),
            refusal("2026-11-10", "1.0", "unknown_event", "old", 100), // before both
        ];
        let h = delivery_health(
            day("2026-11-16"),
            day("2026-11-25"),
            &input,
            &props,
            &refusals,
            &[
                UploadRow {
                    day: day("2026-11-24"),
                    uploads: 200,
                    retries: 3,
                    replayed: 12,
                },
                UploadRow {
                    day: day("2026-11-17"),
                    uploads: 100,
                    retries: 0,
                    replayed: 0,
                },
            ],
        );
        assert_eq!(h.received, 1490);
        assert_eq!(h.week_received, 990);
        // 4 + 1 dropped (refused_items are the collector's 5) + 5 refused.
        assert_eq!(h.week_missing, 10);
        assert_eq!(h.week_missing_share, Some(0.01));
        assert_eq!(
            h.summary,
            "About 1.0% of events are known to be missing this week (2026-W48): \
             5 dropped by clients, 5 refused by the collector. \
             6 more were kept at a lower tier than sent. \
             About 1.5% of 200 uploads this week were retries."
        );
        assert_eq!((h.uploads, h.retries, h.replayed), (300, 3, 12));
        assert_eq!(h.retry_share, Some(0.01));
        assert_eq!(h.week_retry_share, Some(0.015));
        assert_eq!(h.dropped.len(), builtin::DROPPED_REASONS.len());
        assert_eq!(
            (h.dropped[0].reason.as_str(), h.dropped[0].count),
            ("refused_items", 5)
        );
        assert_eq!(h.dropped_by_version[0].version, "1.0");
        assert_eq!(h.refused.len(), 1);
        assert_eq!(h.refused[0].count, 5);
        assert_eq!(h.refused[0].details, ["deploy", "lint"]);
        assert_eq!(h.downgraded[0].reason, "downgraded_full_to_anonymous");
        assert_eq!(h.ignored[0].details, ["context.gpu"]);
    }

    #[test]
    fn the_sentence_without_data_or_without_losses() {
        let h = delivery_health(
            day("2026-11-16"),
            day("2026-11-25"),
            &StatsInput::default(),
            &[],
            &[],
            &[],
        );
        assert_eq!(h.summary, "No data arrived this week (2026-W48).");
        let input = StatsInput {
            counters: vec![counter("2026-11-24", "command", "1.0", 5)],
            ..StatsInput::default()
        };
        let h = delivery_health(day("2026-11-16"), day("2026-11-25"), &input, &[], &[], &[]);
        assert_eq!(
            h.summary,
            "No events are known to be missing this week (2026-W48)."
        );
        let tiny = [dropped("2026-11-24", "spool_full", 1)];
        let input = StatsInput {
            counters: vec![counter("2026-11-24", "command", "1.0", 5000)],
            ..StatsInput::default()
        };
        let h = delivery_health(
            day("2026-11-16"),
            day("2026-11-25"),
            &input,
            &tiny,
            &[],
            &[],
        );
        assert!(
            h.summary.starts_with("Less than 0.1% of events"),
            "{}",
            h.summary
        );
    }
}
