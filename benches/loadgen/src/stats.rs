//! Order statistics over samples: medians and nearest-rank percentiles.
//!
//! Wall-time distributions of process runs are skewed (a rare scheduler hiccup
//! adds tens of milliseconds), so the benchmarks report medians, never means.

use std::time::Duration;

use serde::Serialize;

/// The nearest-rank `p`-th percentile (0 to 100) of `sorted`, which must be
/// sorted ascending; `None` when empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: the smallest value with at least p% of samples at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// The median of `samples` in milliseconds; the mean of the two middle values
/// when the count is even. `None` when empty.
pub fn median_ms(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A duration in fractional milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A compact summary of a set of millisecond samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The smallest sample.
    pub min: f64,
    /// The median.
    pub median: f64,
    /// The 90th percentile (nearest rank).
    pub p90: f64,
    /// The largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarizes `samples` (milliseconds); `None` when empty.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            n: sorted.len(),
            min: *sorted.first()?,
            median: median_ms(&sorted)?,
            p90: percentile(&sorted, 90.0)?,
            max: *sorted.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7u32], 99.0), Some(7));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn median_handles_odd_even_and_unsorted_input() {
        assert_eq!(median_ms(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_ms(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median_ms(&[]), None);
    }

    #[test]
    fn summary_reports_extremes_and_p90() {
        let samples: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(
            (s.n, s.min, s.median, s.p90, s.max),
            (10, 1.0, 5.5, 9.0, 10.0)
        );
        assert!(Summary::of(&[]).is_none());
    }
}
