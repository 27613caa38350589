//! Ids for spooled records and events: unique, unlinkable, and cheap to make.
//!
//! Event and record ids only have to be unique for the collector to
//! recognise a retry, but they must also link nothing: in a long-running host
//! an id that is a function of a per-process seed and a counter lets anyone
//! who sees two ids tell they came from one process, and so link the events
//! before and after a `reset-id`. Drawing each id from the OS random source
//! costs a system call per `track()`, most of its budget, so the process
//! seeds a ChaCha20 stream cipher once from the OS and draws ids from it: its
//! output cannot be told from random, or traced back to the seed, by anyone
//! who sees any number of ids. The install id, which must be unguessable,
//! comes straight from the OS (`Uuid::new_v4`).

use std::sync::{Mutex, OnceLock, PoisonError};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use uuid::Uuid;

/// A fresh, random, UUIDv4-shaped id.
pub(crate) fn next() -> Uuid {
    static RNG: OnceLock<Mutex<ChaCha20Rng>> = OnceLock::new();
    let rng = RNG.get_or_init(|| Mutex::new(ChaCha20Rng::from_seed(seed())));
    let mut bytes = [0u8; 16];
    rng.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// 256 bits from the OS. Should the OS refuse (it practically never does),
/// the time, the process id and an address stand in: ids stay unique, and
/// recording never fails.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        seed[..16].copy_from_slice(&nanos.to_le_bytes());
        seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        let here = &seed as *const _ as usize as u64;
        seed[20..28].copy_from_slice(&here.to_le_bytes());
    }
    seed
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

    /// SplitMix64's finalizer, undone.
    fn unmix(mut z: u64) -> u64 {
        fn inverse(x: u64) -> u64 {
            let mut inv = x;
            for _ in 0..6 {
                inv = inv.wrapping_mul(2u64.wrapping_sub(x.wrapping_mul(inv)));
            }
            inv
        }
        z ^= (z >> 31) ^ (z >> 62);
        z = z.wrapping_mul(inverse(0x94D0_49BB_1331_11EB));
        z ^= (z >> 27) ^ (z >> 54);
        z = z.wrapping_mul(inverse(0xBF58_476D_1CE4_E5B9));
        z ^= (z >> 30) ^ (z >> 60);
        z.wrapping_sub(0x9E37_79B9_7F4A_7C15)
    }

    /// Whether two ids look like the old scheme's `mix(seed ^ counter)` for
    /// nearby counters: undo the mixer for each guess of the four bits the
    /// version overwrote, and see if the two seeds agree but for low bits.
    fn linkable(a: uuid::Uuid, b: uuid::Uuid) -> bool {
        let hi = |id: uuid::Uuid, nibble: u64| {
            let (h, _) = id.as_u64_pair();
            (h & !(0xF << 12)) | (nibble << 12)
        };
        (0..16).any(|x| (0..16).any(|y| unmix(hi(a, x)) ^ unmix(hi(b, y)) < 1 << 32))
    }

    /// Case 10 of issue 13: ids came from a per-process seed through an
    /// invertible mixer, so two ids of one process could be linked (and the
    /// events before and after a `reset-id` with them).
    #[test]
    fn two_ids_of_one_process_cannot_be_linked() {
        // The check finds the old scheme's links...
        let seed = 0x1234_5678_9ABC_DEF0u64;
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let old = |n: u64| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&mix(seed ^ n).to_be_bytes());
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        };
        assert!(linkable(old(7), old(1_000)));
        // ... and none among this process's ids.
        let ids: Vec<_> = (0..50).map(|_| super::next()).collect();
        for pair in ids.windows(2) {
            assert!(!linkable(pair[0], pair[1]), "{pair:?}");
        }
    }
}
