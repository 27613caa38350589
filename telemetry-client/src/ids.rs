//! Ids for spooled records and events: unique, and cheap to make.
//!
//! Event and record ids only have to be unique: the collector uses them to
//! recognise a retry, and they identify nothing. Drawing each one from the OS
//! random source costs a system call per `track()`, most of its budget, so the
//! process draws 128 random bits once and derives ids from them and a counter
//! with SplitMix64's finalizer, a bijection on 64 bits: within a process
//! distinct counters give distinct ids, and two processes can only collide if
//! their random seeds do. The install id, which must be unguessable, still
//! comes straight from the OS (`Uuid::new_v4`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// A fresh, process-unique, UUIDv4-shaped id.
pub(crate) fn next() -> Uuid {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (a, b) = *SEED.get_or_init(|| Uuid::new_v4().as_u64_pair());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = mix(a ^ n).to_be_bytes();
    let lo = mix(b.wrapping_add(n)).to_be_bytes();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi);
    bytes[8..].copy_from_slice(&lo);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_version_4() {
        let ids: HashSet<_> = (0..100_000).map(|_| super::next()).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
    }
}
