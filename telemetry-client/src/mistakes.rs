//! The author's mistakes seen in earlier runs: undeclared events and props,
//! and prop values that do not fit their declaration, by name, kept in
//! `<state>/<tool>/diagnostics.json` so that `telemetry status --verbose`
//! shows what `my-tool build` did wrong in the run before it.
//!
//! Nothing is printed in ordinary runs, and nothing here is ever sent. The
//! file holds names the tool's own code wrote (`track("biuld")`), never a
//! value, and it is written only by a run that made a mistake, above `off`
//! and outside debug mode. It is bounded ([`MAX_NAMES`] names of at most
//! [`MAX_NAME_BYTES`] each), and starts afresh when the tool's version
//! changes, since a new version is where the author fixes them. Writes are
//! not fsynced and take no lock: a lost update only loses a count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use telemetry_protocol::Timestamp;

use crate::folders::ToolPaths;

/// The most names kept per kind.
pub(crate) const MAX_NAMES: usize = 20;
/// The longest name kept, in bytes; longer ones are cut.
pub(crate) const MAX_NAME_BYTES: usize = 64;

/// What earlier runs of one tool version got wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Mistakes {
    /// The tool version these runs had.
    pub(crate) tool_version: String,
    /// When the first of them ran.
    pub(crate) since: Option<Timestamp>,
    /// Undeclared (or built-in) event names passed to `track`, with counts.
    pub(crate) undeclared_events: BTreeMap<String, u64>,
    /// Undeclared props, as `event.prop`, with counts.
    pub(crate) undeclared_props: BTreeMap<String, u64>,
    /// Declared props whose value did not fit, as `event.prop`, with counts.
    pub(crate) dropped_props: BTreeMap<String, u64>,
}

impl Mistakes {
    /// Whether nothing was noted.
    pub(crate) fn is_empty(&self) -> bool {
        self.undeclared_events.is_empty()
            && self.undeclared_props.is_empty()
            && self.dropped_props.is_empty()
    }

    /// Counts one mistake of a kind under `name` (bounded, see the module).
    pub(crate) fn note(list: &mut BTreeMap<String, u64>, name: &str) {
        let name = cut(name);
        if let Some(n) = list.get_mut(name) {
            *n = n.saturating_add(1);
        } else if list.len() < MAX_NAMES {
            list.insert(name.to_owned(), 1);
        }
    }

    /// Reads what earlier runs kept; anything unreadable reads as nothing.
    pub(crate) fn load(paths: &ToolPaths) -> Mistakes {
        std::fs::read(paths.diagnostics())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Adds this run's mistakes to the file, starting afresh when the file
    /// is of another tool version.
    pub(crate) fn merge_into_file(&self, paths: &ToolPaths, now: Timestamp) -> std::io::Result<()> {
        let mut kept = Mistakes::load(paths);
        if kept.tool_version != self.tool_version {
            kept = Mistakes {
                tool_version: self.tool_version.clone(),
                ..Mistakes::default()
            };
        }
        kept.since.get_or_insert(now);
        for (mine, theirs) in [
            (&self.undeclared_events, &mut kept.undeclared_events),
            (&self.undeclared_props, &mut kept.undeclared_props),
            (&self.dropped_props, &mut kept.dropped_props),
        ] {
            for (name, n) in mine {
                if let Some(total) = theirs.get_mut(name) {
                    *total = total.saturating_add(*n);
                } else if theirs.len() < MAX_NAMES {
                    theirs.insert(name.clone(), *n);
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(&kept).map_err(std::io::Error::other)?;
        crate::files::write_replace(&paths.diagnostics(), &bytes)
    }
}

/// `name` cut to at most [`MAX_NAME_BYTES`] on a character boundary.
fn cut(name: &str) -> &str {
    let mut end = name.len().min(MAX_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &tempfile::TempDir) -> ToolPaths {
        ToolPaths {
            dir: dir.path().join("demo"),
        }
    }

    fn run(version: &str, event: &str) -> Mistakes {
        let mut m = Mistakes {
            tool_version: version.to_owned(),
            ..Mistakes::default()
        };
        Mistakes::note(&mut m.undeclared_events, event);
        m
    }

    #[test]
    fn runs_add_up_and_a_new_version_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        run("1.0.0", "biuld").merge_into_file(&p, now).unwrap();
        run("1.0.0", "biuld").merge_into_file(&p, now).unwrap();
        let kept = Mistakes::load(&p);
        assert_eq!(kept.undeclared_events.get("biuld"), Some(&2));
        assert_eq!(kept.since, Some(now));
        run("1.0.1", "tset").merge_into_file(&p, now).unwrap();
        let kept = Mistakes::load(&p);
        assert_eq!(kept.tool_version, "1.0.1");
        assert_eq!(kept.undeclared_events.keys().collect::<Vec<_>>(), ["tset"]);
    }

    #[test]
    fn names_are_bounded_in_number_and_length() {
        let mut list = BTreeMap::new();
        for i in 0..(MAX_NAMES + 5) {
            Mistakes::note(&mut list, &format!("e{i}"));
        }
        assert_eq!(list.len(), MAX_NAMES);
        let mut list = BTreeMap::new();
        Mistakes::note(&mut list, &"é".repeat(MAX_NAME_BYTES));
        assert!(list.keys().all(|k| k.len() <= MAX_NAME_BYTES));
    }

    #[test]
    fn a_damaged_file_reads_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        std::fs::create_dir_all(&p.dir).unwrap();
        std::fs::write(p.diagnostics(), b"\xff{not json").unwrap();
        assert!(Mistakes::load(&p).is_empty());
    }
}
