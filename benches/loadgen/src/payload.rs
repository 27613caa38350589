//! Builds valid protocol-v1 ingest payloads for the load generator.
//!
//! Every payload must pass [`telemetry_protocol::validate`] and must never be
//! a retry of an earlier one: a duplicate would be acknowledged without being
//! written and would inflate the throughput figure. So every event id and
//! report id is unique: 8 random bytes fixed per generator followed by a
//! counter, shaped as a UUIDv4. Counters in one aggregate payload must have
//! distinct keys, so each carries a `slot` prop numbering it in its batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use telemetry_protocol::policy::{is_identifier, is_project_name, limits};
use telemetry_protocol::{
    ClientContext, Counter, Event, IngestPayload, PropValue, Props, Tier, Timestamp, Uuid,
};

use crate::Error;

/// What the generated payloads look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSpec {
    /// The project name every payload carries.
    pub project: String,
    /// The tier every payload claims; not `off`.
    pub tier: Tier,
    /// The event names to cycle through; valid identifiers.
    pub events: Vec<String>,
    /// Events (or counters, at `aggregate`) per payload.
    pub batch: usize,
    /// How many distinct install ids the `anonymous`/`full` payloads rotate through.
    pub installs: u64,
}

impl PayloadSpec {
    /// Checks the spec against the protocol's names and limits, so a bad
    /// argument fails once up front rather than as thousands of 422s.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.tier == Tier::Off {
            return bad("tier `off` sends nothing; choose aggregate, anonymous or full".into());
        }
        if !is_project_name(&self.project) {
            return bad(format!("`{}` is not a valid project name", self.project));
        }
        if self.events.is_empty() {
            return bad("at least one event name is needed".into());
        }
        if let Some(e) = self.events.iter().find(|e| !is_identifier(e)) {
            return bad(format!("`{e}` is not a valid event name ([a-z][a-z0-9_]*)"));
        }
        let max = limits::MAX_EVENTS.min(limits::MAX_COUNTERS);
        if self.batch == 0 || self.batch > max {
            return bad(format!("batch must be 1 to {max}"));
        }
        if self.installs == 0 {
            return bad("installs must be at least 1".into());
        }
        Ok(())
    }
}

/// Hands out payloads with ids unique across every call and every thread.
#[derive(Debug)]
pub struct PayloadFactory {
    spec: PayloadSpec,
    context: ClientContext,
    /// Random per factory, so two runs against one database never collide.
    seed: u64,
    /// Random per factory, the high half of every install id.
    install_seed: u64,
    next_id: AtomicU64,
}

impl PayloadFactory {
    /// A factory for `spec`, seeded from the OS random source.
    pub fn new(spec: PayloadSpec) -> Result<PayloadFactory, Error> {
        spec.check()?;
        let random = |what: &str| {
            getrandom::u64().map_err(|e| {
                Error::io(
                    format!("seeding {what}"),
                    std::io::Error::other(e.to_string()),
                )
            })
        };
        Ok(PayloadFactory {
            context: ClientContext::current("1.0.0"),
            seed: random("event ids")?,
            install_seed: random("install ids")?,
            next_id: AtomicU64::new(0),
            spec,
        })
    }

    /// The spec this factory follows.
    pub fn spec(&self) -> &PayloadSpec {
        &self.spec
    }

    /// A fresh id. The counter keeps ids unique; the mixed high half makes
    /// their order random, as real clients' random ids are, so the collector's
    /// trees are not flattered by ids that always sort last.
    fn unique_id(&self) -> Uuid {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        uuid_from(mix(self.seed ^ n), n)
    }

    /// The payload for request number `request`.
    pub fn payload(&self, request: u64) -> IngestPayload {
        let spec = &self.spec;
        let now = now_millis();
        let base = IngestPayload {
            project: spec.project.clone(),
            tier: spec.tier,
            context: self.context.clone(),
            report_id: None,
            counters: None,
            install_id: None,
            events: None,
            identity: None,
        };
        let name = |slot: usize| {
            let i = (request as usize)
                .wrapping_mul(spec.batch)
                .wrapping_add(slot);
            spec.events[i % spec.events.len()].clone()
        };
        match spec.tier {
            Tier::Aggregate => {
                let day = Timestamp::from_unix_millis(now).day();
                let counters = (0..spec.batch)
                    .map(|slot| Counter {
                        day,
                        event: name(slot),
                        props: slot_props(slot),
                        count: 1,
                    })
                    .collect();
                IngestPayload {
                    report_id: Some(self.unique_id()),
                    counters: Some(counters),
                    ..base
                }
            }
            _ => {
                let install = request % spec.installs;
                let events = (0..spec.batch)
                    .map(|slot| Event {
                        id: self.unique_id(),
                        name: name(slot),
                        timestamp: Timestamp::from_unix_millis(now),
                        props: slot_props(slot),
                    })
                    .collect();
                IngestPayload {
                    install_id: Some(uuid_from(self.install_seed, install)),
                    events: Some(events),
                    ..base
                }
            }
        }
    }
}

/// One short token prop numbering the item in its batch.
fn slot_props(slot: usize) -> Props {
    let mut props = Props::new();
    props.insert("slot".to_owned(), PropValue::Token(format!("s{slot}")));
    props
}

/// A UUIDv4-shaped id from a fixed high half and a counter. Setting the
/// version and variant bits only touches the high half and the counter's top
/// two bits, so distinct counters below 2^62 give distinct ids.
fn uuid_from(high: u64, n: u64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// SplitMix64's finalizer: a bijection on `u64` that scatters neighbours.
/// Shared by the load tools that need unique, randomly ordered ids.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(tier: Tier, batch: usize) -> PayloadSpec {
        PayloadSpec {
            project: "bench-project".into(),
            tier,
            events: vec!["command".into(), "setup_started".into()],
            batch,
            installs: 3,
        }
    }

    #[test]
    fn payloads_pass_the_tier_policy_at_every_tier_and_batch_size() {
        for tier in [Tier::Aggregate, Tier::Anonymous, Tier::Full] {
            for batch in [1, 10, 100, 1000] {
                let factory = PayloadFactory::new(spec(tier, batch)).unwrap();
                for request in 0..3 {
                    let p = factory.payload(request);
                    telemetry_protocol::validate(&p)
                        .unwrap_or_else(|v| panic!("{tier} batch {batch}: {v}"));
                    let items = p.counters.as_ref().map(Vec::len);
                    let items = items.or(p.events.as_ref().map(Vec::len));
                    assert_eq!(items, Some(batch));
                    assert_eq!(p.tier, tier);
                }
            }
        }
    }

    #[test]
    fn ids_never_repeat_across_requests() {
        let factory = PayloadFactory::new(spec(Tier::Anonymous, 10)).unwrap();
        let mut ids = HashSet::new();
        let mut installs = HashSet::new();
        for request in 0..100 {
            let p = factory.payload(request);
            installs.insert(p.install_id.unwrap());
            for e in p.events.unwrap() {
                assert!(ids.insert(e.id), "event id repeated");
                assert_eq!(e.id.get_version_num(), 4);
            }
        }
        assert_eq!(ids.len(), 1000);
        assert_eq!(installs.len(), 3, "installs rotate through the pool");

        let factory = PayloadFactory::new(spec(Tier::Aggregate, 1)).unwrap();
        let reports: HashSet<_> = (0..100)
            .map(|r| factory.payload(r).report_id.unwrap())
            .collect();
        assert_eq!(reports.len(), 100);
    }

    #[test]
    fn two_factories_do_not_collide() {
        let a = PayloadFactory::new(spec(Tier::Full, 1)).unwrap();
        let b = PayloadFactory::new(spec(Tier::Full, 1)).unwrap();
        let id = |f: &PayloadFactory| f.payload(0).events.unwrap()[0].id;
        assert_ne!(id(&a), id(&b));
    }

    #[test]
    fn bad_specs_are_refused_up_front() {
        let cases = [
            PayloadSpec {
                tier: Tier::Off,
                ..spec(Tier::Off, 1)
            },
            PayloadSpec {
                project: "Bad Name".into(),
                ..spec(Tier::Full, 1)
            },
            PayloadSpec {
                events: vec![],
                ..spec(Tier::Full, 1)
            },
            PayloadSpec {
                events: vec!["Has-Dash".into()],
                ..spec(Tier::Full, 1)
            },
            spec(Tier::Full, 0),
            spec(Tier::Full, 1001),
            PayloadSpec {
                installs: 0,
                ..spec(Tier::Full, 1)
            },
        ];
        for case in cases {
            assert!(PayloadFactory::new(case.clone()).is_err(), "{case:?}");
        }
    }
}
