//! Version skew: what ingest does with a payload that this collector only
//! partly understands, because the tool, its manifest or its client is newer
//! (or older) than the collector's copy.
//!
//! After the whole-request checks (the tier policy: anything that says more
//! than its tier allows is still a `422`), [`accept`] sorts each item:
//! - an event or counter whose event, prop or value the manifest does not
//!   declare, or whose time is out of range, is **refused on its own**; the
//!   rest of the payload is stored;
//! - a payload above the project's `max_tier` is **downgraded**: `full` to
//!   `anonymous` drops the identity before anything is written, and anything
//!   to `aggregate` rolls the events up into daily counters, with no install
//!   row and no install id;
//! - fields the protocol does not define were already **ignored** by the
//!   parser ([`telemetry_protocol::wire::record_ignored`]).
//!
//! Time sanity keeps every stored time purgeable and every replay
//! recognisable: an event may be at most a day ahead and no older than the
//! project's raw-event retention (the purge removes what is older, so its
//! replay could not be recognised); a counter's day at most a day ahead and
//! no older than [`REPORT_ID_DAYS`], the window in which report ids are
//! remembered.
//!
//! Each refusal, downgrade and ignored field is answered (capped), counted
//! in `/metrics`, stored in `refusals` with the accepted items, and logged
//! once per (project, reason, tool version) an hour, naming the event, prop
//! or value, never the payload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use telemetry_protocol::manifest::{PropKind, coarsen_version};
use telemetry_protocol::policy::limits::MAX_DAYS_AHEAD;
use telemetry_protocol::wire::{IgnoredFields, MAX_REFUSED_ITEMS};
use telemetry_protocol::{
    Counter, Day, Event, IngestPayload, IngestResponse, Manifest, PropValue, Props, RefusedItem,
    Tier, Timestamp, Uuid, Violation, ViolationCode,
};

use crate::cardinality::OTHER;
use crate::metrics::Metrics;
use crate::store::{
    BatchContext, BatchData, IngestBatch, InstallHash, REPORT_ID_DAYS, RefusedRow, Skew, SkewNote,
};

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Distinct (project, reason, detail) triples one UTC day may add to
/// `refusals`; past it the detail is stored as `(other)`. Details are
/// client-chosen names, so without a cap a hostile client could grow the
/// table without bound.
pub const MAX_DETAILS_PER_DAY: usize = 10_000;

/// How long after a warning about a (project, reason, tool version) the
/// next one of the same kind is held back.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(3600);

/// Most (project, reason, tool version) keys the warning throttle holds.
const MAX_WARNING_KEYS: usize = 10_000;

/// The in-memory state of skew handling: the daily cap on distinct details
/// and the warning throttle.
#[derive(Debug, Default)]
pub struct SkewLog {
    /// Keys the detail hashes; random per process.
    hasher: RandomState,
    /// The day the admitted details belong to, and their hashes.
    details: Mutex<(Option<Day>, HashSet<u64>)>,
    /// When each (project, reason, tool version) was last warned about.
    warned: Mutex<HashMap<(String, String, String), Instant>>,
}

impl SkewLog {
    /// `detail` if today's budget admits it, otherwise [`OTHER`].
    fn admit(&self, day: Day, project: &str, reason: &str, detail: String) -> String {
        let mut guard = self.details.lock().unwrap_or_else(|p| p.into_inner());
        if guard.0 != Some(day) {
            *guard = (Some(day), HashSet::new());
        }
        let hash = self.hasher.hash_one((project, reason, &detail));
        if guard.1.contains(&hash) {
            return detail;
        }
        if guard.1.len() < MAX_DETAILS_PER_DAY {
            guard.1.insert(hash);
            detail
        } else {
            OTHER.to_owned()
        }
    }

    /// Logs one warning per (project, reason, tool version) per
    /// [`WARNING_INTERVAL`], naming the first detail seen.
    fn warn(&self, project: &str, version: &str, skew: &Skew, now: Instant) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let reasons = skew
            .refused
            .iter()
            .map(|r| (&r.reason, &r.detail))
            .chain(skew.notes.iter().map(|n| (&n.reason, &n.detail)));
        for (reason, detail) in reasons {
            let key = (project.to_owned(), reason.clone(), version.to_owned());
            if warned
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < WARNING_INTERVAL)
            {
                continue;
            }
            if warned.len() >= MAX_WARNING_KEYS {
                warned.clear();
            }
            warned.insert(key, now);
            tracing::warn!(
                project,
                tool_version = version,
                reason = reason.as_str(),
                detail = detail.as_str(),
                "version skew: the collector's manifest or protocol version does not cover what \
                 this tool version sends; the rest of its payloads is stored (repeats of this \
                 reason for this tool version are not logged for an hour)"
            );
        }
    }
}

/// What the project allows, as [`accept`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// The project's manifest; `None` in open mode.
    pub manifest: Option<&'a Manifest>,
    /// The highest tier stored.
    pub max_tier: Tier,
    /// Days raw events are kept.
    pub retention_days: u32,
}

/// A payload sorted into what is stored and what is counted.
#[derive(Debug)]
pub struct Accepted {
    /// What the store takes.
    pub batch: IngestBatch,
    /// What `refusals` counts.
    pub skew: Skew,
    /// The answer, less `accepted` and `duplicates`, which the store decides.
    pub answer: IngestResponse,
}

/// Collects the refusals of one payload.
struct Refusals<'a> {
    answer: &'a mut IngestResponse,
    rows: Vec<RefusedRow>,
}

impl Refusals<'_> {
    fn refuse(
        &mut self,
        id: Option<telemetry_protocol::Uuid>,
        violation: Violation,
        detail: String,
    ) {
        let reason = violation.code.as_str();
        self.answer.refused += 1;
        *self
            .answer
            .refused_by_reason
            .entry(reason.to_owned())
            .or_default() += 1;
        if self.answer.refused_items.len() < MAX_REFUSED_ITEMS {
            self.answer.refused_items.push(RefusedItem {
                path: violation.path,
                reason: reason.to_owned(),
                message: violation.message,
            });
        }
        self.rows.push(RefusedRow {
            id,
            reason: reason.to_owned(),
            detail,
        });
    }
}

/// The props of an item as the operator may see them: `event`,
/// `event.prop`, or for an enum value the manifest lacks, `event.prop=value`.
/// Never a value of an undeclared prop, which has no kind and so could be
/// anything a newer tool decided to send.
fn detail_of(manifest: Option<&Manifest>, v: &Violation, event: &str, props: &Props) -> String {
    let Some((_, key)) = v.path.split_once(".props.") else {
        return event.to_owned();
    };
    let declared = manifest
        .and_then(|m| m.event(event))
        .and_then(|e| e.props.get(key));
    match (declared.map(|p| &p.kind), props.get(key)) {
        (Some(PropKind::Enum { .. }), Some(value @ PropValue::Token(_))) => {
            format!("{event}.{key}={value}")
        }
        _ => format!("{event}.{key}"),
    }
}

/// The first manifest violation of one item at `tier`, if any.
fn check_item(
    manifest: Option<&Manifest>,
    tier: Tier,
    path: impl Fn() -> String,
    name: &str,
    props: &Props,
) -> Option<Violation> {
    let manifest = manifest?;
    let mut out = Vec::new();
    manifest.check_event(tier, path, name, props, &mut out);
    out.into_iter().next()
}

/// Coarsens the `version` props of an event rolled up to `aggregate`, which
/// stores versions as `major.minor` only.
fn coarsen_props(manifest: Option<&Manifest>, name: &str, props: &mut Props) {
    let Some(spec) = manifest.and_then(|m| m.event(name)) else {
        return;
    };
    for (key, value) in props.iter_mut() {
        if let (Some(PropKind::Version), PropValue::Token(t)) =
            (spec.props.get(key).map(|p| &p.kind), &*value)
            && let Some(coarse) = coarsen_version(t)
        {
            *value = PropValue::Token(coarse);
        }
    }
}

/// **Sorts a payload** that passed the whole-request checks into the batch
/// to store and what was refused, downgraded or ignored, as of `now_millis`.
pub fn accept(
    payload: IngestPayload,
    install: Option<InstallHash>,
    ignored: IgnoredFields,
    limits: Limits<'_>,
    now_millis: i64,
) -> Accepted {
    let today = Timestamp::from_unix_millis(now_millis).day();
    let manifest = limits.manifest;
    let tier = payload.tier.min(limits.max_tier);
    let mut answer = IngestResponse::default();
    let mut notes = Vec::new();
    if tier < payload.tier {
        answer.downgraded_to = Some(tier);
        let items = payload.events.as_ref().map_or(0, Vec::len) as u64;
        notes.push(SkewNote {
            reason: format!("downgraded_{}_to_{tier}", payload.tier),
            detail: String::new(),
            count: items,
        });
    }
    answer.ignored = ignored.count;
    let mut named = 0;
    for (name, n) in ignored.names {
        named += n;
        answer.ignored_fields.push(name.clone());
        notes.push(SkewNote {
            reason: "ignored_field".into(),
            detail: name,
            count: n,
        });
    }
    if ignored.count > named {
        notes.push(SkewNote {
            reason: "ignored_field".into(),
            detail: OTHER.into(),
            count: ignored.count - named,
        });
    }
    let mut refusals = Refusals {
        answer: &mut answer,
        rows: Vec::new(),
    };

    // Counters are refused past the report-id window; events past the
    // retention, since the purge removes what a replay would be matched against.
    let latest_day = today.add_days(MAX_DAYS_AHEAD);
    let latest_millis = now_millis.saturating_add(i64::from(MAX_DAYS_AHEAD) * MILLIS_PER_DAY);
    let oldest_counter_day = today.add_days(-REPORT_ID_DAYS);
    let retention = i32::try_from(limits.retention_days).unwrap_or(i32::MAX / 2);
    let oldest_event_millis =
        i64::from(today.add_days(-retention).days_since_epoch()) * MILLIS_PER_DAY;
    let time_violation = |path: String, future: bool| {
        if future {
            Violation::new(
                path,
                ViolationCode::TimeInFuture,
                format!("dated more than {MAX_DAYS_AHEAD} day ahead of the collector's clock"),
            )
        } else {
            Violation::new(
                path,
                ViolationCode::TimeTooOld,
                "dated before what this collector keeps or can recognise as a replay",
            )
        }
    };

    let data = match (tier, payload.tier) {
        (Tier::Aggregate, Tier::Aggregate) => {
            let report_id = payload.report_id.unwrap_or_default();
            let mut kept = Vec::new();
            for (i, c) in payload.counters.into_iter().flatten().enumerate() {
                let path = || format!("counters[{i}]");
                let problem = if c.day > latest_day || c.day < oldest_counter_day {
                    Some(time_violation(path(), c.day > latest_day))
                } else {
                    check_item(manifest, tier, path, &c.event, &c.props)
                };
                match problem {
                    Some(v) => {
                        let detail = detail_of(manifest, &v, &c.event, &c.props);
                        refusals.refuse(Some(counter_refusal_id(report_id, i)), v, detail);
                    }
                    None => kept.push(c),
                }
            }
            BatchData::Aggregate {
                report_id,
                counters: kept,
            }
        }
        (Tier::Aggregate, _) => {
            // Rolled up: each event becomes a counter of 1 on its day, kept
            // under its own id for the report-id window.
            let mut kept = Vec::new();
            for (i, mut e) in payload.events.into_iter().flatten().enumerate() {
                let path = || format!("events[{i}]");
                let day = e.timestamp.day();
                coarsen_props(manifest, &e.name, &mut e.props);
                let problem =
                    if e.timestamp.unix_millis() > latest_millis || day < oldest_counter_day {
                        Some(time_violation(
                            path(),
                            e.timestamp.unix_millis() > latest_millis,
                        ))
                    } else {
                        check_item(manifest, tier, path, &e.name, &e.props)
                    };
                match problem {
                    Some(v) => {
                        let detail = detail_of(manifest, &v, &e.name, &e.props);
                        refusals.refuse(Some(e.id), v, detail);
                    }
                    None => kept.push((
                        e.id,
                        Counter {
                            day,
                            event: e.name,
                            props: e.props,
                            count: 1,
                        },
                    )),
                }
            }
            BatchData::Rollup { counters: kept }
        }
        _ => {
            let mut kept: Vec<Event> = Vec::new();
            for (i, e) in payload.events.into_iter().flatten().enumerate() {
                let path = || format!("events[{i}]");
                let millis = e.timestamp.unix_millis();
                let problem = if millis > latest_millis || millis < oldest_event_millis {
                    Some(time_violation(path(), millis > latest_millis))
                } else {
                    check_item(manifest, tier, path, &e.name, &e.props)
                };
                match problem {
                    Some(v) => {
                        let detail = detail_of(manifest, &v, &e.name, &e.props);
                        refusals.refuse(Some(e.id), v, detail);
                    }
                    None => kept.push(e),
                }
            }
            let identity = if tier == Tier::Full {
                payload
                    .identity
                    .map(|fields| keep_declared_identity(manifest, fields, &mut refusals))
            } else {
                None
            };
            BatchData::Events {
                install: install.unwrap_or(InstallHash([0; 16])),
                events: kept,
                identity,
            }
        }
    };
    let rows = refusals.rows;
    Accepted {
        batch: IngestBatch {
            project: payload.project,
            tier,
            context: BatchContext {
                version: payload.context.tool_version,
                os: payload.context.os,
                arch: payload.context.arch,
            },
            received: today,
            data,
        },
        skew: Skew {
            refused: rows,
            notes,
        },
        answer,
    }
}

/// The id under which the refusal of counter `index` of the aggregate report
/// `report` is remembered, like a refused event's own id. A report is
/// replayed when its answer was lost; the replay is answered with the
/// refusals of the manifest the collector has *then*, which may differ from
/// the first time (a manifest changed in between). Counting each refused
/// counter once by this id, replay or not, keeps the `refusals` table equal
/// to what the answers told the client, which counts each answer's
/// `refused` once per payload.
fn counter_refusal_id(report: Uuid, index: usize) -> Uuid {
    // Report ids are random, so a fixed odd multiplier per position keeps
    // these apart from each other and from every report and event id.
    const SPREAD: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;
    Uuid::from_u128(report.as_u128() ^ SPREAD.wrapping_mul(index as u128 + 1))
}

/// The identity fields the manifest declares, within its length caps; each
/// other field is refused on its own, named but never with its value.
fn keep_declared_identity(
    manifest: Option<&Manifest>,
    fields: BTreeMap<String, String>,
    refusals: &mut Refusals<'_>,
) -> BTreeMap<String, String> {
    let Some(manifest) = manifest else {
        return fields;
    };
    let mut kept = BTreeMap::new();
    for (key, value) in fields {
        let path = format!("identity.{key}");
        let problem = match manifest.identity.get(&key) {
            None => Some(Violation::new(
                path.clone(),
                ViolationCode::UnknownIdentityField,
                format!("identity field `{key}` is not declared in the manifest; it was dropped"),
            )),
            Some(field) if value.chars().count() > field.max_len => Some(Violation::new(
                path.clone(),
                ViolationCode::TooLarge,
                format!(
                    "at most {} characters; the field was dropped",
                    field.max_len
                ),
            )),
            Some(_) => None,
        };
        match problem {
            // Identity fields carry no id: the store counts their refusal
            // only when the request's events were new, so a replay does not.
            Some(v) => refusals.refuse(None, v, path),
            None => {
                kept.insert(key, value);
            }
        }
    }
    kept
}

impl SkewLog {
    /// Applies the daily detail cap to `skew`, counts it in `metrics` and
    /// logs what has not been logged this hour.
    pub fn record(&self, metrics: &Metrics, batch: &IngestBatch, skew: &mut Skew) {
        if skew.is_empty() {
            return;
        }
        let project = batch.project.as_str();
        for row in &mut skew.refused {
            row.detail = self.admit(
                batch.received,
                project,
                &row.reason,
                std::mem::take(&mut row.detail),
            );
            metrics.skew(project, "refused", &row.reason, 1);
        }
        for note in &mut skew.notes {
            note.detail = self.admit(
                batch.received,
                project,
                &note.reason,
                std::mem::take(&mut note.detail),
            );
            let kind = if note.reason.starts_with("downgraded_") {
                "downgraded"
            } else {
                "ignored"
            };
            metrics.skew(project, kind, &note.reason, note.count);
        }
        self.warn(project, &batch.context.version, skew, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_protocol::{ClientContext, Uuid};

    const MANIFEST: &str = r#"
project = "demo"
endpoint = "http://127.0.0.1:1"
[events.command]
description = "A command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which" }
props.version = { kind = "version", description = "Of what" }
[events.crash]
description = "A crash"
min_tier = "anonymous"
[identity.email]
description = "Where to write"
max_len = 20
"#;

    const NOW: i64 = 1_780_000_000_000;

    fn event(n: u128, name: &str, props: &[(&str, &str)], millis: i64) -> Event {
        Event {
            id: Uuid::from_u128(n),
            name: name.into(),
            timestamp: Timestamp::from_unix_millis(millis),
            props: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), PropValue::from(*v)))
                .collect(),
        }
    }

    fn payload(tier: Tier, events: Vec<Event>) -> IngestPayload {
        IngestPayload {
            project: "demo".into(),
            tier,
            context: ClientContext::current("1.5.0"),
            report_id: None,
            counters: None,
            install_id: Some(Uuid::from_u128(99)),
            events: Some(events),
            identity: (tier == Tier::Full).then(|| {
                BTreeMap::from([
                    ("email".to_owned(), "a@example.org".to_owned()),
                    ("phone".to_owned(), "SECRET-PHONE".to_owned()),
                ])
            }),
        }
    }

    fn limits(manifest: &Manifest, max_tier: Tier) -> Limits<'_> {
        Limits {
            manifest: Some(manifest),
            max_tier,
            retention_days: 90,
        }
    }

    #[test]
    fn each_item_is_refused_on_its_own_with_a_reason_and_a_safe_detail() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let day = MILLIS_PER_DAY;
        let events = vec![
            event(1, "command", &[("name", "greet")], NOW),
            event(2, "command", &[("name", "deploy")], NOW),
            event(3, "command", &[("name", "greet"), ("flag", "VALUE-X")], NOW),
            event(4, "lint", &[], NOW),
            event(5, "command", &[], NOW + day + 60_000),
            event(6, "command", &[], NOW - 91 * day),
            event(7, "command", &[], NOW - 89 * day),
            event(8, "install", &[], NOW + day - 60_000),
        ];
        let out = accept(
            payload(Tier::Full, events),
            Some(InstallHash([1; 16])),
            IgnoredFields::default(),
            limits(&manifest, Tier::Full),
            NOW,
        );
        let BatchData::Events {
            events, identity, ..
        } = &out.batch.data
        else {
            panic!("events expected")
        };
        let kept: Vec<u128> = events.iter().map(|e| e.id.as_u128()).collect();
        assert_eq!(kept, [1, 7, 8]);
        assert_eq!(
            identity.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["email"]
        );
        let rows: Vec<(Option<u128>, &str, &str)> = out
            .skew
            .refused
            .iter()
            .map(|r| {
                (
                    r.id.map(|i| i.as_u128()),
                    r.reason.as_str(),
                    r.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Some(2), "invalid_value", "command.name=deploy"),
                (Some(3), "unknown_prop", "command.flag"),
                (Some(4), "unknown_event", "lint"),
                (Some(5), "time_in_future", "command"),
                (Some(6), "time_too_old", "command"),
                (None, "unknown_identity_field", "identity.phone"),
            ]
        );
        assert_eq!(out.answer.refused, 6);
        assert_eq!(out.answer.refused_by_reason["unknown_event"], 1);
        assert_eq!(out.answer.refused_items[0].path, "events[1].props.name");
        let text = format!("{out:?}");
        assert!(
            !text.contains("VALUE-X"),
            "an undeclared prop's value leaked"
        );
        assert!(!text.contains("SECRET-PHONE"), "an identity value leaked");
    }

    #[test]
    fn counters_are_refused_outside_the_report_id_window() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let today = Timestamp::from_unix_millis(NOW).day();
        let counter = |d: i32| Counter {
            day: today.add_days(d),
            event: "command".into(),
            props: Props::new(),
            count: 2,
        };
        let mut p = payload(Tier::Aggregate, vec![]);
        p.events = None;
        p.install_id = None;
        p.report_id = Some(Uuid::from_u128(5));
        p.counters = Some(vec![
            counter(2),
            counter(1),
            counter(0),
            counter(-REPORT_ID_DAYS),
            counter(-REPORT_ID_DAYS - 1),
        ]);
        let out = accept(
            p,
            None,
            IgnoredFields::default(),
            limits(&manifest, Tier::Full),
            NOW,
        );
        let BatchData::Aggregate { counters, .. } = &out.batch.data else {
            panic!()
        };
        assert_eq!(counters.len(), 3);
        assert_eq!(
            out.answer.refused_by_reason,
            BTreeMap::from([("time_in_future".into(), 1), ("time_too_old".into(), 1)])
        );
    }

    #[test]
    fn max_tier_downgrades_instead_of_refusing() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let events = || {
            vec![
                event(1, "install", &[], NOW),
                event(2, "command", &[("version", "2.3.4")], NOW),
                event(3, "crash", &[], NOW),
            ]
        };
        // full -> anonymous: the identity goes, the events stay.
        let out = accept(
            payload(Tier::Full, events()),
            Some(InstallHash([1; 16])),
            IgnoredFields::default(),
            limits(&manifest, Tier::Anonymous),
            NOW,
        );
        assert_eq!(out.batch.tier, Tier::Anonymous);
        assert_eq!(out.answer.downgraded_to, Some(Tier::Anonymous));
        let BatchData::Events {
            events: kept,
            identity,
            ..
        } = &out.batch.data
        else {
            panic!()
        };
        assert_eq!((kept.len(), identity.is_none()), (3, true));
        assert_eq!(out.skew.notes[0].reason, "downgraded_full_to_anonymous");
        assert_eq!(out.skew.notes[0].count, 3);
        assert!(!format!("{out:?}").contains("a@example.org"));

        // anonymous -> aggregate: counters only, versions coarsened, and an
        // event above aggregate refused.
        let out = accept(
            payload(Tier::Anonymous, events()),
            Some(InstallHash([1; 16])),
            IgnoredFields::default(),
            limits(&manifest, Tier::Aggregate),
            NOW,
        );
        assert_eq!(out.batch.tier, Tier::Aggregate);
        let BatchData::Rollup { counters } = &out.batch.data else {
            panic!("a rollup expected")
        };
        let got: Vec<(u128, &str, String)> = counters
            .iter()
            .map(|(id, c)| (id.as_u128(), c.event.as_str(), serde_json_props(&c.props)))
            .collect();
        assert_eq!(
            got,
            [
                (1, "install", String::new()),
                (2, "command", "version=2.3".into())
            ]
        );
        assert_eq!(out.answer.refused_by_reason["event_above_tier"], 1);
        assert_eq!(
            out.skew.notes[0].reason,
            "downgraded_anonymous_to_aggregate"
        );
    }

    fn serde_json_props(props: &Props) -> String {
        props
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn details_are_capped_per_day_and_warnings_per_hour() {
        let log = SkewLog::default();
        let day = Day::from_days_since_epoch(20_000);
        for i in 0..MAX_DETAILS_PER_DAY {
            assert_eq!(
                log.admit(day, "p", "unknown_event", format!("e{i}")),
                format!("e{i}")
            );
        }
        assert_eq!(log.admit(day, "p", "unknown_event", "late".into()), OTHER);
        assert_eq!(log.admit(day, "p", "unknown_event", "e7".into()), "e7");
        assert_eq!(
            log.admit(day.add_days(1), "p", "unknown_event", "late".into()),
            "late"
        );

        let skew = Skew {
            refused: vec![RefusedRow {
                id: None,
                reason: "unknown_event".into(),
                detail: "lint".into(),
            }],
            notes: vec![],
        };
        let start = Instant::now();
        log.warn("p", "1.5.0", &skew, start);
        let at = |k: &str| {
            log.warned
                .lock()
                .unwrap()
                .get(&("p".into(), k.into(), "1.5.0".into()))
                .copied()
        };
        assert_eq!(at("unknown_event"), Some(start));
        log.warn("p", "1.5.0", &skew, start + Duration::from_secs(60));
        assert_eq!(
            at("unknown_event"),
            Some(start),
            "held back within the hour"
        );
        let later = start + WARNING_INTERVAL + Duration::from_secs(1);
        log.warn("p", "1.5.0", &skew, later);
        assert_eq!(at("unknown_event"), Some(later));
    }
}
