//! Consent tiers: the one ordered scale every other part of the toolkit speaks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How much a user agreed to share, lowest first.
///
/// The order is meaningful: `Off < Aggregate < Anonymous < Full`, and every
/// ceiling in the toolkit (environment, system policy, global file) is applied
/// with [`Ord::min`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Nothing is recorded or sent.
    Off,
    /// Daily counts only: no identifier and no per-event time.
    Aggregate,
    /// A random, resettable install id with timestamped events.
    Anonymous,
    /// Everything `anonymous` carries plus the identity fields the user typed in.
    Full,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [Tier::Off, Tier::Aggregate, Tier::Anonymous, Tier::Full];

    /// The lowercase name used on the wire, in files and on command lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Off => "off",
            Tier::Aggregate => "aggregate",
            Tier::Anonymous => "anonymous",
            Tier::Full => "full",
        }
    }

    /// Whether this tier carries a per-install identifier.
    pub const fn has_install_id(self) -> bool {
        matches!(self, Tier::Anonymous | Tier::Full)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no tier; its message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown telemetry level `{input}`; valid levels are: off, aggregate, anonymous, full")]
pub struct ParseTierError {
    /// What was given.
    pub input: String,
}

impl FromStr for Tier {
    type Err = ParseTierError;

    /// Parses a tier name, ignoring ASCII case and surrounding whitespace, because
    /// people type these into environment variables and prompts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        Tier::ALL
            .into_iter()
            .find(|tier| tier.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| ParseTierError {
                input: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_lowest_first() {
        assert!(Tier::Off < Tier::Aggregate);
        assert!(Tier::Aggregate < Tier::Anonymous);
        assert!(Tier::Anonymous < Tier::Full);
        assert_eq!(Tier::Full.min(Tier::Aggregate), Tier::Aggregate);
    }

    #[test]
    fn parse_and_display_round_trip() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>(), Ok(tier));
            assert_eq!(tier.to_string(), tier.as_str());
        }
        assert_eq!(" Full\n".parse::<Tier>(), Ok(Tier::Full));
    }

    #[test]
    fn parse_error_lists_valid_names() {
        let err = "everything".parse::<Tier>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`everything`"), "{msg}");
        for tier in Tier::ALL {
            assert!(msg.contains(tier.as_str()), "{msg} should list {tier}");
        }
    }

    #[test]
    fn serde_uses_lowercase_names() {
        for tier in Tier::ALL {
            let json = serde_json::to_string(&tier).unwrap();
            assert_eq!(json, format!("\"{}\"", tier.as_str()));
            assert_eq!(serde_json::from_str::<Tier>(&json).unwrap(), tier);
        }
        assert!(serde_json::from_str::<Tier>("\"Full\"").is_err());
    }
}
