//! Cardinality caps: how many distinct values one UTC day may add, so that
//! attacker-chosen strings cannot grow the database (or this process)
//! without bound.
//!
//! Every prop value, prop combination and context value is a new dictionary
//! string or counter row the first time it is seen, and a manifest bounds
//! only some of them (`version` props and context values take any short
//! token; in open mode, everything does). So each of these scopes admits at
//! most a configured number of distinct values per UTC day of arrival:
//! - the values of each prop, per project ([`Scope::PropValue`]);
//! - the prop combinations of each event, per project ([`Scope::Props`]),
//!   since distinct combinations of admitted values are new strings too;
//! - each context field (tool version, OS, arch), per project;
//! - in open mode, where no manifest names them, the event names and prop
//!   names per project, and the projects themselves.
//!
//! A value past its cap is stored as [`OTHER`], so the data still counts and
//! the stats show the overflow as "other"; a combination past its cap
//! becomes the single prop `{"(other)": "(other)"}`. A project past the open-mode
//! cap is refused with `429` until the next UTC day, since folding projects
//! together would mix different tools' data. Built-in lifecycle events are
//! never folded. Every fold is counted for `/metrics`.
//!
//! The day is the day a request arrives, not the day its data claims, so
//! back-dated data cannot open new budgets. Values are kept as keyed 64-bit
//! hashes (the key is random per process, so nobody can choose colliding
//! values), at most [`MAX_TRACKED`] in all, and forgotten when the day
//! changes. The caps hold per collector process: a restart, or another
//! collector on the same PostgreSQL database, starts its own count.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use telemetry_protocol::manifest::builtin;
use telemetry_protocol::{Day, ErrorCode, PropValue, Props};

use crate::config::CardinalityConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{BatchData, IngestBatch};

/// The value, prop name or event name stored in place of one past its cap.
/// Parentheses are outside every client alphabet, so no client value can
/// ever be mistaken for it.
pub const OTHER: &str = "(other)";

/// Most values tracked at once across every scope; about 16 bytes each.
/// Past it every new value folds, so this process's memory stays bounded
/// even if the per-scope caps were set very high.
pub const MAX_TRACKED: usize = 1_000_000;

/// A set of values with a cap of its own.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Scope {
    /// Open mode: the projects.
    Project,
    /// Open mode: the event names of a project.
    EventName,
    /// Open mode: the prop names of a project.
    PropName,
    /// The values of one prop of a project.
    PropValue,
    /// The prop combinations of one event of a project.
    Props,
    /// A project's tool versions.
    ToolVersion,
    /// A project's OS names.
    Os,
    /// A project's CPU architectures.
    Arch,
}

impl Scope {
    /// Every scope, in the order `/metrics` lists them.
    pub const ALL: [Scope; 8] = [
        Scope::Project,
        Scope::EventName,
        Scope::PropName,
        Scope::PropValue,
        Scope::Props,
        Scope::ToolVersion,
        Scope::Os,
        Scope::Arch,
    ];

    /// The scope's label in `/metrics`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Project => "project",
            Scope::EventName => "event_name",
            Scope::PropName => "prop_name",
            Scope::PropValue => "prop_value",
            Scope::Props => "prop_combination",
            Scope::ToolVersion => "tool_version",
            Scope::Os => "os",
            Scope::Arch => "arch",
        }
    }
}

/// The caps and what today has admitted.
#[derive(Debug)]
pub struct Cardinality {
    /// The configured caps.
    config: CardinalityConfig,
    /// Whether no manifest names the events and props.
    open_mode: bool,
    /// Keys the value hashes; random per process.
    hasher: RandomState,
    /// What the current day has admitted.
    today: Mutex<Admitted>,
}

/// The values one day admitted, by scope instance.
#[derive(Debug, Default)]
struct Admitted {
    /// The UTC day these sets belong to.
    day: Option<Day>,
    /// Hashes of admitted values, by the hash of their scope instance
    /// (the scope, the project and the prop or event name).
    sets: HashMap<u64, HashSet<u64, Prehashed>, Prehashed>,
    /// Values held in `sets`, in all.
    tracked: usize,
}

/// What one batch had folded, per scope.
type Folds = [u64; Scope::ALL.len()];

/// The maps of [`Admitted`] are keyed by hashes that `Cardinality::hasher`
/// already made (keyed, random per process, so nobody can aim them at one
/// bucket): hashing them again with SipHash was a tenth of ingest's
/// instructions. This hasher passes a `u64` through.
type Prehashed = BuildHasherDefault<PassThrough>;

/// See [`Prehashed`].
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; this keeps any other use correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Scope-instance hashes one batch has computed, most [`SCOPE_KEYS`] of
/// them: within a batch the same few (scope, event or prop name) pairs come
/// back for every item, so each is hashed once per batch, not once per item.
type ScopeKeys = Vec<(Scope, String, u64)>;

/// Most scope-instance hashes one batch keeps; past it they are computed each time.
const SCOPE_KEYS: usize = 32;

impl Cardinality {
    /// Caps from `config`; `open_mode` adds the caps on names and projects.
    pub fn new(config: CardinalityConfig, open_mode: bool) -> Cardinality {
        Cardinality {
            config,
            open_mode,
            hasher: RandomState::new(),
            today: Mutex::default(),
        }
    }

    fn cap(&self, scope: Scope) -> usize {
        match scope {
            Scope::Project => self.config.open_projects_per_day,
            Scope::EventName | Scope::PropName => self.config.open_names_per_day,
            _ => self.config.values_per_day,
        }
    }

    /// **Applies the caps to `batch`** as it arrived on `batch.received`:
    /// values past their cap become [`OTHER`], and the folds are counted in
    /// `metrics`. A new project past the open-mode cap is refused.
    pub fn fold(&self, batch: &mut IngestBatch, metrics: &Metrics) -> Result<(), ApiError> {
        let mut today = self.today.lock().unwrap_or_else(|p| p.into_inner());
        if today.day != Some(batch.received) {
            *today = Admitted {
                day: Some(batch.received),
                ..Admitted::default()
            };
        }
        let mut folds = Folds::default();
        let mut keys = ScopeKeys::new();
        let mut budget = Budget(self, &mut today, &mut folds, &batch.project, &mut keys);
        if self.open_mode && !budget.admit(Scope::Project, "", &batch.project) {
            metrics.cardinality_overflow(Scope::Project, 1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "this collector takes data from at most {} projects a day in open mode; \
                     retry after midnight UTC",
                    self.config.open_projects_per_day
                ),
            )
            .retry_after(until_next_utc_day()));
        }
        let context = &mut batch.context;
        budget.fold_value(Scope::ToolVersion, "", &mut context.version);
        budget.fold_value(Scope::Os, "", &mut context.os);
        budget.fold_value(Scope::Arch, "", &mut context.arch);
        match &mut batch.data {
            BatchData::Aggregate { counters, .. } => {
                for c in counters {
                    budget.fold_item(&mut c.event, &mut c.props);
                }
            }
            BatchData::Rollup { counters } => {
                for (_, c) in counters {
                    budget.fold_item(&mut c.event, &mut c.props);
                }
            }
            BatchData::Events { events, .. } => {
                for e in events {
                    budget.fold_item(&mut e.name, &mut e.props);
                }
            }
        }
        drop(today);
        for (scope, n) in Scope::ALL.into_iter().zip(folds) {
            if n > 0 {
                metrics.cardinality_overflow(scope, n);
            }
        }
        Ok(())
    }
}

/// One batch's view of today's sets: the caps, the sets, the fold counts,
/// the project and the scope-instance hashes computed so far.
struct Budget<'a>(
    &'a Cardinality,
    &'a mut Admitted,
    &'a mut Folds,
    &'a str,
    &'a mut ScopeKeys,
);

impl Budget<'_> {
    /// Whether `value` may be stored in `scope` (of this project and `name`),
    /// admitting it if it is new and there is room. Counts a refusal.
    fn admit(&mut self, scope: Scope, name: &str, value: impl Hash) -> bool {
        let Budget(caps, admitted, folds, project, keys) = self;
        // Projects are one set for the whole collector; every other scope is per project.
        let owner = if scope == Scope::Project { "" } else { project };
        let known = keys.iter().find(|(s, n, _)| *s == scope && n == name);
        let key = match known {
            Some(&(_, _, key)) => key,
            None => {
                let key = caps.hasher.hash_one((scope, owner, name));
                if keys.len() < SCOPE_KEYS {
                    keys.push((scope, name.to_owned(), key));
                }
                key
            }
        };
        let value = caps.hasher.hash_one(value);
        let set = admitted.sets.entry(key).or_default();
        if set.contains(&value) {
            return true;
        }
        if set.len() < caps.cap(scope) && admitted.tracked < MAX_TRACKED {
            set.insert(value);
            admitted.tracked += 1;
            return true;
        }
        if set.is_empty() {
            admitted.sets.remove(&key);
        }
        folds[Scope::ALL.iter().position(|s| *s == scope).unwrap_or(0)] += 1;
        false
    }

    /// Replaces `value` with [`OTHER`] unless `scope` admits it.
    fn fold_value(&mut self, scope: Scope, name: &str, value: &mut String) {
        if value != OTHER && !self.admit(scope, name, value.as_str()) {
            OTHER.clone_into(value);
        }
    }

    /// Folds one event's or counter's name and props.
    fn fold_item(&mut self, event: &mut String, props: &mut Props) {
        let lifecycle = builtin::ALL.contains(&event.as_str());
        if self.0.open_mode && !lifecycle {
            self.fold_value(Scope::EventName, "", event);
        }
        if props.is_empty() {
            return;
        }
        // Values are folded in place; the map is rebuilt only when a prop
        // name folds, since a map's keys cannot change in place. Building a
        // new map for every item was a measurable share of ingest.
        let mut renamed = Vec::new();
        for (key, value) in props.iter_mut() {
            let name_folds = self.0.open_mode
                && !lifecycle
                && key != OTHER
                && !self.admit(Scope::PropName, "", key.as_str());
            if name_folds {
                renamed.push(key.clone());
            }
            if name_folds || key == OTHER {
                *value = PropValue::Token(OTHER.to_owned());
            } else if let PropValue::Token(token) = value {
                self.fold_value(Scope::PropValue, key, token);
            }
        }
        for key in renamed {
            if let Some(value) = props.remove(&key) {
                props.insert(OTHER.to_owned(), value);
            }
        }
        if !self.admit(Scope::Props, event, &*props) {
            *props = Props::from([(OTHER.to_owned(), PropValue::Token(OTHER.to_owned()))]);
        }
    }
}

/// The time left until the next UTC midnight, at least one second.
fn until_next_utc_day() -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Duration::from_secs(86_400 - now % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::InstallHash;
    use crate::store::BatchContext;
    use telemetry_protocol::{Event, Tier, Timestamp, Uuid};

    fn caps(values: usize, names: usize) -> CardinalityConfig {
        CardinalityConfig {
            values_per_day: values,
            open_projects_per_day: 2,
            open_names_per_day: names,
        }
    }

    /// A batch arriving on `day` with one event `name` carrying `props`.
    fn batch(day: i32, version: &str, name: &str, props: &[(&str, &str)]) -> IngestBatch {
        IngestBatch {
            project: "p".into(),
            tier: Tier::Anonymous,
            context: BatchContext {
                version: version.into(),
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            received: Day::from_days_since_epoch(day),
            data: BatchData::Events {
                install: InstallHash([0; 16]),
                events: vec![Event {
                    id: Uuid::from_u128(1),
                    name: name.into(),
                    timestamp: Timestamp::from_unix_millis(0),
                    props: props
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), PropValue::from(*v)))
                        .collect(),
                }],
                identity: None,
            },
        }
    }

    /// The first event's name and props after folding, as text.
    fn folded(c: &Cardinality, mut b: IngestBatch) -> (String, String, String) {
        c.fold(&mut b, &Metrics::default()).unwrap();
        let BatchData::Events { events, .. } = &b.data else {
            unreachable!()
        };
        let props: Vec<String> = events[0]
            .props
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        (b.context.version, events[0].name.clone(), props.join(","))
    }

    #[test]
    fn values_past_each_cap_fold_into_other() {
        let c = Cardinality::new(caps(2, 100), false);
        /// (version, event, props) sent, and (version, event, props) kept.
        type Row<'a> = (
            (&'a str, &'a str, &'a [(&'a str, &'a str)]),
            (&'a str, &'a str, &'a str),
        );
        let table: [Row<'_>; 6] = [
            (("1.0", "run", &[("v", "a")]), ("1.0", "run", "v=a")),
            (("1.1", "run", &[("v", "b")]), ("1.1", "run", "v=b")),
            // A third version and a third value of `v` are past the cap of
            // 2, and so is the third combination that leaves.
            (
                ("1.2", "run", &[("v", "c")]),
                ("(other)", "run", "(other)=(other)"),
            ),
            // Kept values stay kept.
            (("1.0", "run", &[("v", "a")]), ("1.0", "run", "v=a")),
            // A third combination of kept values is past the cap of `run`'s combinations.
            (
                ("1.0", "run", &[("v", "a"), ("w", "x")]),
                ("1.0", "run", "(other)=(other)"),
            ),
            // Another event has combinations of its own.
            (("1.0", "stop", &[("v", "a")]), ("1.0", "stop", "v=a")),
        ];
        for ((version, name, props), (v, n, p)) in table {
            let got = folded(&c, batch(10, version, name, props));
            assert_eq!(
                got,
                (v.to_owned(), n.to_owned(), p.to_owned()),
                "{version} {name} {props:?}"
            );
        }
        // The next day starts afresh.
        assert_eq!(folded(&c, batch(11, "1.2", "run", &[("v", "c")])).0, "1.2");
    }

    #[test]
    fn open_mode_caps_names_but_never_lifecycle_events() {
        let c = Cardinality::new(caps(100, 1), true);
        assert_eq!(
            folded(&c, batch(10, "1", "first", &[("k", "v")])).1,
            "first"
        );
        let (_, name, props) = folded(&c, batch(10, "1", "second", &[("j", "v")]));
        assert_eq!(
            (name.as_str(), props.as_str()),
            ("(other)", "(other)=(other)")
        );
        assert_eq!(folded(&c, batch(10, "1", "install", &[])).1, "install");
        let metrics = Metrics::default();
        let mut third = batch(10, "1", "x", &[]);
        third.project = "q".into();
        c.fold(&mut third, &metrics).unwrap();
        let mut fourth = batch(10, "1", "x", &[]);
        fourth.project = "r".into();
        let refused = c.fold(&mut fourth, &metrics).unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        assert!(refused.retry_after.is_some());
    }

    #[test]
    fn a_folded_prop_name_leaves_the_other_props_of_its_item_as_they_were() {
        // Two prop names a day: `c` is the third, so it alone becomes
        // `(other)`, with its value, while `a` and `b` keep theirs.
        let c = Cardinality::new(caps(100, 2), true);
        let (_, name, props) = folded(
            &c,
            batch(10, "1", "run", &[("a", "x"), ("b", "y"), ("c", "z")]),
        );
        assert_eq!(
            (name.as_str(), props.as_str()),
            ("run", "(other)=(other),a=x,b=y")
        );
        // The names kept stay kept; the value past no cap is untouched.
        let (_, _, props) = folded(&c, batch(10, "1", "run", &[("b", "w")]));
        assert_eq!(props, "b=w");
    }
}
