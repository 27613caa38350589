//! Differentially private releases for the public stats page: which cells
//! are drawn, how much privacy each one spends, and the rule that each cell
//! is drawn once and then kept.
//!
//! # What is released
//!
//! - **Daily cells** of four counts: new installs, weekly-active installs (by
//!   the day the install first reported activity that week), setup started
//!   and setup completed. A day is released once it is over, at the first
//!   public read after it; so the current week grows by one day each day,
//!   and a week is frozen once its last day is released. Counts that reach
//!   the collector after their day was released are not in the public
//!   numbers (the signed-in dashboard has them).
//! - **Weekly breakdowns** of the last whole week, once it is over: new and
//!   active installs by OS and by arch over fixed lists of values
//!   ([`OS_VALUES`], [`ARCH_VALUES`], everything else counted as `other`),
//!   and by version over the versions seen, released with OpenDP's threshold
//!   mechanism so that a version only a few installs use is never named.
//!
//! Everything the page shows is computed from these cells: weekly numbers
//! and window totals are sums of daily cells, rates are ratios of noisy sums.
//! That is post-processing, which costs no privacy, and it makes every total
//! the sum of its parts, so subtracting published numbers yields only noise.
//!
//! # The budget
//!
//! The privacy unit is one install. The client sends `install`,
//! `setup_started` and `setup_completed` once per install and `active` once
//! per ISO week, each with one version, OS and arch. So within one week an
//! install adds at most 1 to one daily cell of each of the four counts, and
//! at most 1 to one row of each of the six breakdowns: every release has
//! sensitivity 1. Daily cells of one count cover disjoint days, so a week of
//! them costs what one costs (parallel composition). A week's data is
//! therefore touched by [`RELEASES_PER_WEEK`] releases, each spending
//! `epsilon_per_week / RELEASES_PER_WEEK`; by sequential composition the week
//! costs `epsilon_per_week`, and the version breakdowns add a `delta` of
//! [`VERSION_DELTA`] each. Weeks are disjoint in the daily cells, and an
//! install's weeks compose: over `n` weeks it is `n * epsilon_per_week`.
//!
//! The noise is discrete Laplace (the two-sided geometric distribution),
//! sampled exactly by OpenDP; this module never draws a random number itself.

use std::collections::{BTreeMap, HashMap, HashSet};

use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{make_laplace, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance, L1Distance, L01InfDistance};
use telemetry_protocol::Day;
use telemetry_protocol::manifest::builtin;

use crate::store::{ReleasedCell, StatsInput, Store, StoreError};

/// The privacy loss per week when the config sets none. At this value a
/// weekly count is within about ±90 of the truth 95% of the time, under 1%
/// of a project with 10,000 installs a week (see docs/benchmarks.md).
pub const DEFAULT_EPSILON_PER_WEEK: f64 = 1.0;
/// The confidence of the accuracy the page states.
pub const CONFIDENCE: f64 = 0.95;
/// The `delta` of each version breakdown: the chance that a version used by
/// a single install is named anyway.
pub const VERSION_DELTA: f64 = 1e-7;
/// The OS values counted on their own in the OS breakdown; any other is `other`.
pub const OS_VALUES: &[&str] = &[
    "linux", "macos", "windows", "freebsd", "openbsd", "netbsd", "android",
];
/// The arch values counted on their own in the arch breakdown.
pub const ARCH_VALUES: &[&str] = &["x86_64", "aarch64", "x86", "arm", "riscv64"];
/// The bucket of every OS or arch not in the lists.
pub const OTHER: &str = "other";
/// How many releases touch one week's data; each spends an equal share.
pub const RELEASES_PER_WEEK: u32 = (Daily::ALL.len() + Breakdown::ALL.len()) as u32;

/// A failure to release.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// OpenDP refused to build or run a mechanism (for example a bad epsilon).
    #[error("differential privacy mechanism: {0}")]
    Mechanism(String),
}

fn mechanism(e: opendp::error::Error) -> ReleaseError {
    ReleaseError::Mechanism(e.to_string())
}

/// A count released per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Daily {
    /// New installs.
    Installs,
    /// Installs active in the week, on the day they first reported it.
    Active,
    /// Setup started.
    SetupStarted,
    /// Setup completed.
    SetupCompleted,
}

impl Daily {
    /// Every daily count.
    pub const ALL: [Daily; 4] = [
        Daily::Installs,
        Daily::Active,
        Daily::SetupStarted,
        Daily::SetupCompleted,
    ];

    /// The statistic's name in storage.
    pub fn name(self) -> &'static str {
        match self {
            Daily::Installs => "installs",
            Daily::Active => "active",
            Daily::SetupStarted => "setup_started",
            Daily::SetupCompleted => "setup_completed",
        }
    }

    fn of_event(event: &str) -> Option<Daily> {
        match event {
            builtin::INSTALL => Some(Daily::Installs),
            builtin::ACTIVE => Some(Daily::Active),
            builtin::SETUP_STARTED => Some(Daily::SetupStarted),
            builtin::SETUP_COMPLETED => Some(Daily::SetupCompleted),
            _ => None,
        }
    }
}

/// What a breakdown splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The tool version, over the versions seen (threshold mechanism).
    Version,
    /// The OS, over [`OS_VALUES`] and `other`.
    Os,
    /// The arch, over [`ARCH_VALUES`] and `other`.
    Arch,
}

/// One weekly breakdown: a dimension of new or of active installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Breakdown {
    /// What is split.
    pub dimension: Dimension,
    /// Of which count: [`Daily::Installs`] or [`Daily::Active`].
    pub count: Daily,
}

impl Breakdown {
    /// Every breakdown.
    pub const ALL: [Breakdown; 6] = [
        Breakdown::new(Dimension::Version, Daily::Installs),
        Breakdown::new(Dimension::Version, Daily::Active),
        Breakdown::new(Dimension::Os, Daily::Installs),
        Breakdown::new(Dimension::Os, Daily::Active),
        Breakdown::new(Dimension::Arch, Daily::Installs),
        Breakdown::new(Dimension::Arch, Daily::Active),
    ];

    const fn new(dimension: Dimension, count: Daily) -> Breakdown {
        Breakdown { dimension, count }
    }

    /// The statistic's name in storage, e.g. `os.active`.
    pub fn name(self) -> String {
        let dimension = match self.dimension {
            Dimension::Version => "version",
            Dimension::Os => "os",
            Dimension::Arch => "arch",
        };
        format!("{dimension}.{}", self.count.name())
    }

    /// The fixed values of an OS or arch breakdown, `None` for versions.
    fn fixed_values(self) -> Option<&'static [&'static str]> {
        match self.dimension {
            Dimension::Version => None,
            Dimension::Os => Some(OS_VALUES),
            Dimension::Arch => Some(ARCH_VALUES),
        }
    }

    fn bucket(self, value: &str) -> &str {
        match self.fixed_values() {
            None => value,
            Some(values) if values.contains(&value) => value,
            Some(_) => OTHER,
        }
    }
}

/// A project's privacy budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The privacy loss epsilon one install's data of one week may cost.
    pub epsilon_per_week: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            epsilon_per_week: DEFAULT_EPSILON_PER_WEEK,
        }
    }
}

impl Budget {
    /// What each of the [`RELEASES_PER_WEEK`] releases of a week spends.
    pub fn epsilon_per_release(&self) -> f64 {
        self.epsilon_per_week / f64::from(RELEASES_PER_WEEK)
    }

    /// The discrete Laplace scale of every cell: sensitivity 1 over epsilon.
    pub fn scale(&self) -> f64 {
        1.0 / self.epsilon_per_release()
    }

    /// The smallest `n` such that a sum of `cells` independent noisy cells
    /// is within `±n` of the true sum with probability at least
    /// [`CONFIDENCE`].
    ///
    /// Computed exactly rather than approximated: a discrete Laplace variable
    /// is the difference of two geometric ones, so a sum of `cells` of them
    /// is `A - B` with `A`, `B` independent negative binomials, whose
    /// distribution has a closed form. The mass cut off in the far tail
    /// (under 1e-12) is counted as outside the interval, so the figure errs
    /// on the safe side. This computes the stated accuracy only; it draws
    /// nothing.
    pub fn accuracy(&self, cells: u32) -> u64 {
        let n = f64::from(cells.max(1));
        let p = (-1.0 / self.scale()).exp();
        // P(A = k) = C(k + n - 1, k) (1 - p)^n p^k, by its ratio recurrence in logs.
        let mean = n * p / (1.0 - p);
        let sd = (n * p).sqrt() / (1.0 - p);
        let len = (mean + 40.0 * sd + 100.0).min(50_000_000.0) as usize;
        let mut pmf = Vec::with_capacity(len);
        let mut log = n * (1.0 - p).ln();
        for k in 0..len {
            if k > 0 {
                let k = k as f64;
                log += p.ln() + ((k + n - 1.0) / k).ln();
            }
            pmf.push(log.exp());
        }
        let mut cdf = Vec::with_capacity(len);
        let mut total = 0.0;
        for m in &pmf {
            total += m;
            cdf.push(total);
        }
        let at = |i: i64| -> f64 {
            if i < 0 {
                0.0
            } else {
                cdf[(i as usize).min(len - 1)]
            }
        };
        // P(|A - B| <= t) = sum over k of P(B = k) P(k - t <= A <= k + t).
        let within = |t: i64| -> f64 {
            pmf.iter()
                .enumerate()
                .map(|(k, m)| m * (at(k as i64 + t) - at(k as i64 - t - 1)))
                .sum()
        };
        let (mut lo, mut hi) = (-1i64, 1i64);
        while within(hi) < CONFIDENCE {
            lo = hi;
            hi *= 2;
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if within(mid) < CONFIDENCE {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi as u64
    }
}

type CountMeasurement =
    opendp::core::Measurement<AtomDomain<i64>, AbsoluteDistance<i64>, MaxDivergence, i64>;
type VectorMeasurement = opendp::core::Measurement<
    VectorDomain<AtomDomain<i64>>,
    L1Distance<i64>,
    MaxDivergence,
    Vec<i64>,
>;
type ThresholdMeasurement = opendp::core::Measurement<
    MapDomain<AtomDomain<String>, AtomDomain<i64>>,
    L01InfDistance<AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<String, i64>,
>;

/// The mechanisms of one budget, built by OpenDP, with the privacy loss
/// OpenDP's own privacy maps give for sensitivity 1.
pub struct Noise {
    count: CountMeasurement,
    vector: VectorMeasurement,
    threshold: ThresholdMeasurement,
    /// Epsilon of one count, from the mechanism's privacy map.
    count_epsilon: f64,
    /// Epsilon of a fixed-domain breakdown.
    vector_epsilon: f64,
    /// Epsilon and delta of a version breakdown.
    threshold_loss: (f64, f64),
    /// A version is named only when its noisy count reaches this.
    version_threshold: i64,
}

impl std::fmt::Debug for Noise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Noise")
            .field("count_epsilon", &self.count_epsilon)
            .field("vector_epsilon", &self.vector_epsilon)
            .field("threshold_loss", &self.threshold_loss)
            .field("version_threshold", &self.version_threshold)
            .finish_non_exhaustive()
    }
}

impl Noise {
    /// Builds the mechanisms for `budget`; versions are named only from
    /// `min_count` up, and higher if [`VERSION_DELTA`] needs it.
    pub fn new(budget: Budget, min_count: u64) -> Result<Noise, ReleaseError> {
        if !(budget.epsilon_per_week.is_finite() && budget.epsilon_per_week > 0.0) {
            return Err(ReleaseError::Mechanism(format!(
                "epsilon per week must be a positive number, not {}",
                budget.epsilon_per_week
            )));
        }
        let scale = budget.scale();
        let count = make_laplace(
            AtomDomain::<i64>::default(),
            AbsoluteDistance::<i64>::default(),
            scale,
            None,
        )
        .map_err(mechanism)?;
        let vector = make_laplace(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )
        .map_err(mechanism)?;
        let threshold_at = |t: i64| {
            make_laplace_threshold(
                MapDomain::new(
                    AtomDomain::<String>::default(),
                    AtomDomain::<i64>::default(),
                ),
                L0PInfDistance(AbsoluteDistance::<i64>::default()),
                scale,
                t,
                None,
            )
            .map_err(mechanism)
        };
        let delta_at = |t: i64| -> Result<f64, ReleaseError> {
            Ok(threshold_at(t)?.map(&(1, 1, 1)).map_err(mechanism)?.1)
        };
        // The smallest threshold from min_count up whose delta is small enough.
        let mut lo = i64::try_from(min_count.max(1)).unwrap_or(i64::MAX / 4);
        let mut hi = lo;
        while delta_at(hi)? > VERSION_DELTA {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if delta_at(mid)? > VERSION_DELTA {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let threshold = threshold_at(hi)?;
        Ok(Noise {
            count_epsilon: count.map(&1).map_err(mechanism)?,
            vector_epsilon: vector.map(&1).map_err(mechanism)?,
            threshold_loss: threshold.map(&(1, 1, 1)).map_err(mechanism)?,
            version_threshold: hi,
            count,
            vector,
            threshold,
        })
    }

    /// `truth` plus fresh discrete Laplace noise.
    pub fn count(&self, truth: i64) -> Result<i64, ReleaseError> {
        self.count.invoke(&truth).map_err(mechanism)
    }

    /// The epsilon one [`Noise::count`] spends.
    pub fn count_epsilon(&self) -> f64 {
        self.count_epsilon
    }

    /// The noisy count a version must reach to be named.
    pub fn version_threshold(&self) -> i64 {
        self.version_threshold
    }

    /// The epsilon and delta of one version breakdown.
    pub fn version_loss(&self) -> (f64, f64) {
        self.threshold_loss
    }

    /// A breakdown of `truth` (value to count): every fixed value of an OS or
    /// arch breakdown gets a noisy count; versions keep only those whose
    /// noisy count reaches the threshold. Returns the rows and the epsilon.
    fn breakdown(
        &self,
        breakdown: Breakdown,
        truth: &HashMap<String, i64>,
    ) -> Result<(Vec<(String, i64)>, f64), ReleaseError> {
        match breakdown.fixed_values() {
            Some(values) => {
                let keys: Vec<&str> = values.iter().copied().chain([OTHER]).collect();
                let counts: Vec<i64> = keys
                    .iter()
                    .map(|k| truth.get(*k).copied().unwrap_or(0))
                    .collect();
                let noisy = self.vector.invoke(&counts).map_err(mechanism)?;
                Ok((
                    keys.into_iter().map(str::to_owned).zip(noisy).collect(),
                    self.vector_epsilon,
                ))
            }
            None => {
                let positive: HashMap<String, i64> = truth
                    .iter()
                    .filter(|(k, n)| !k.is_empty() && **n > 0)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect();
                let kept = self.threshold.invoke(&positive).map_err(mechanism)?;
                Ok((kept.into_iter().collect(), self.threshold_loss.0))
            }
        }
    }
}

/// What each week's data has spent so far, by statistic. Cells of one
/// statistic within a week cover disjoint days, so the statistic costs the
/// largest epsilon among them; the week costs the sum over statistics.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    spent: BTreeMap<Day, BTreeMap<String, f64>>,
}

impl Ledger {
    /// The ledger of what `cells` spent.
    pub fn of(cells: &[ReleasedCell]) -> Ledger {
        let mut ledger = Ledger::default();
        for c in cells {
            ledger.add(c.period.week_start(), &c.statistic, c.epsilon);
        }
        ledger
    }

    fn add(&mut self, week: Day, statistic: &str, epsilon: f64) {
        let spent = self
            .spent
            .entry(week)
            .or_default()
            .entry(statistic.to_owned())
            .or_insert(0.0);
        *spent = spent.max(epsilon);
    }

    /// The epsilon the week starting `week` has spent.
    pub fn spent(&self, week: Day) -> f64 {
        self.spent
            .get(&week)
            .map_or(0.0, |by_statistic| by_statistic.values().sum())
    }

    /// Records a release of `statistic` in `week` spending `epsilon`, if the
    /// week stays within `limit`; otherwise records nothing and says no.
    fn try_spend(&mut self, week: Day, statistic: &str, epsilon: f64, limit: f64) -> bool {
        let mut after = self.clone();
        after.add(week, statistic, epsilon);
        // A relative slack for the rounding of epsilon / RELEASES_PER_WEEK.
        if after.spent(week) > limit * (1.0 + 1e-9) {
            return false;
        }
        *self = after;
        true
    }
}

/// The counts behind the cells not released yet.
struct Truth {
    daily: HashMap<(Day, Daily), i64>,
    breakdowns: HashMap<Breakdown, HashMap<String, i64>>,
}

impl Truth {
    fn of(input: &StatsInput, breakdown_week: Day) -> Truth {
        let mut truth = Truth {
            daily: HashMap::new(),
            breakdowns: HashMap::new(),
        };
        for row in &input.counters {
            let Some(daily) = Daily::of_event(&row.event) else {
                continue;
            };
            let count = i64::try_from(row.count).unwrap_or(i64::MAX);
            let cell = truth.daily.entry((row.day, daily)).or_insert(0);
            *cell = cell.saturating_add(count);
            if row.day.week_start() != breakdown_week {
                continue;
            }
            for b in Breakdown::ALL.iter().filter(|b| b.count == daily) {
                let value = match b.dimension {
                    Dimension::Version => &row.version,
                    Dimension::Os => &row.os,
                    Dimension::Arch => &row.arch,
                };
                let cell = truth
                    .breakdowns
                    .entry(*b)
                    .or_default()
                    .entry(b.bucket(value).to_owned())
                    .or_insert(0);
                *cell = cell.saturating_add(count);
            }
        }
        truth
    }
}

/// What one release draws for.
struct Plan<'a> {
    project: &'a str,
    today: Day,
    breakdown_week: Day,
    budget: Budget,
    min_count: u64,
}

/// Draws the missing cells that fit in their week's budget.
fn draw(
    plan: &Plan<'_>,
    released: &[ReleasedCell],
    truth: &Truth,
    missing_days: Vec<(Day, Daily)>,
    missing_breakdowns: Vec<Breakdown>,
) -> Result<Vec<ReleasedCell>, ReleaseError> {
    let noise = Noise::new(plan.budget, plan.min_count)?;
    let mut ledger = Ledger::of(released);
    let limit = plan.budget.epsilon_per_week;
    let cell =
        |period: Day, statistic: String, key: String, value: i64, epsilon: f64| ReleasedCell {
            project: plan.project.to_owned(),
            period,
            statistic,
            key,
            value,
            epsilon,
            released_on: plan.today,
        };
    let mut fresh = Vec::new();
    let mut refused = 0usize;
    for (day, d) in missing_days {
        if !ledger.try_spend(day.week_start(), d.name(), noise.count_epsilon(), limit) {
            refused += 1;
            continue;
        }
        let value = noise.count(truth.daily.get(&(day, d)).copied().unwrap_or(0))?;
        fresh.push(cell(
            day,
            d.name().to_owned(),
            String::new(),
            value,
            noise.count_epsilon(),
        ));
    }
    let empty = HashMap::new();
    let week = plan.breakdown_week;
    for b in missing_breakdowns {
        let counts = truth.breakdowns.get(&b).unwrap_or(&empty);
        let (rows, epsilon) = noise.breakdown(b, counts)?;
        if !ledger.try_spend(week, &b.name(), epsilon, limit) {
            refused += 1;
            continue;
        }
        // The marker row says the breakdown was released, even when the
        // threshold kept no version at all.
        fresh.push(cell(week, b.name(), String::new(), 0, epsilon));
        for (key, value) in rows {
            fresh.push(cell(week, b.name(), key, value, epsilon));
        }
    }
    if refused > 0 {
        tracing::warn!(
            project = plan.project,
            refused,
            "public cells not released: their week's privacy budget is spent"
        );
    }
    Ok(fresh)
}

/// **Releases what the public page of `project` needs on `today`** and
/// returns every released cell with a period in `from..=today`: the daily
/// cells of `from` through yesterday and the breakdowns of last week.
///
/// Cells already stored are returned as stored and never drawn again. New
/// ones are drawn only within the budget: a week whose spend would pass
/// `budget.epsilon_per_week` (say, after the budget was lowered) gets no new
/// cells. New cells are kept before they are returned, and what is returned
/// is read back from storage, so collectors sharing a database publish the
/// same numbers.
pub async fn release(
    store: &dyn Store,
    project: &str,
    from: Day,
    today: Day,
    budget: Budget,
    min_count: u64,
) -> Result<Vec<ReleasedCell>, ReleaseError> {
    let yesterday = today.add_days(-1);
    let breakdown_week = today.week_start().add_days(-7);
    let first = from.min(breakdown_week);
    let released = store.released_cells(project, first, today).await?;
    let have: HashSet<(Day, &str, &str)> = released
        .iter()
        .map(|c| (c.period, c.statistic.as_str(), c.key.as_str()))
        .collect();
    let mut missing_days = Vec::new();
    let mut day = from;
    while day <= yesterday {
        for d in Daily::ALL {
            if !have.contains(&(day, d.name(), "")) {
                missing_days.push((day, d));
            }
        }
        day = day.add_days(1);
    }
    let missing_breakdowns: Vec<Breakdown> = Breakdown::ALL
        .into_iter()
        .filter(|b| !have.contains(&(breakdown_week, b.name().as_str(), "")))
        .collect();
    if missing_days.is_empty() && missing_breakdowns.is_empty() {
        return Ok(released);
    }

    let input = store.stats_input(project, first, yesterday).await?;
    let truth = Truth::of(&input, breakdown_week);
    // OpenDP's measurements are not `Send`, so drawing happens in one
    // synchronous step between the awaits.
    let fresh = draw(
        &Plan {
            project,
            today,
            breakdown_week,
            budget,
            min_count,
        },
        &released,
        &truth,
        missing_days,
        missing_breakdowns,
    )?;
    if !fresh.is_empty() {
        store.keep_released(fresh).await?;
    }
    Ok(store.released_cells(project, first, today).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variance of discrete Laplace noise of `scale`.
    fn variance(scale: f64) -> f64 {
        let p = (-1.0 / scale).exp();
        2.0 * p / ((1.0 - p) * (1.0 - p))
    }

    #[test]
    fn every_release_spends_an_equal_share_of_the_week() {
        let budget = Budget::default();
        assert_eq!(RELEASES_PER_WEEK, 10);
        let noise = Noise::new(budget, 10).unwrap();
        assert!((noise.count_epsilon() - 0.1).abs() < 1e-12);
        assert!((noise.vector_epsilon - 0.1).abs() < 1e-12);
        let (epsilon, delta) = noise.version_loss();
        assert!((epsilon - 0.1).abs() < 1e-12, "{epsilon}");
        assert!(delta <= VERSION_DELTA, "{delta}");
        assert!(noise.version_threshold() >= 10);
        assert!(
            Noise::new(
                Budget {
                    epsilon_per_week: 0.0
                },
                10
            )
            .is_err()
        );
        assert!(
            Noise::new(
                Budget {
                    epsilon_per_week: f64::NAN
                },
                10
            )
            .is_err()
        );
    }

    /// Over many draws, the noise has the spread the stated epsilon
    /// promises: the variance of discrete Laplace at scale 10 / epsilon, and
    /// the stated ±N holding for about 95% of single cells and for at least
    /// 95% of weekly sums. A mechanism wired to another scale (epsilon per
    /// week instead of per release, or no noise) fails by far: the
    /// tolerances are several standard errors wide, so this does not flake.
    #[test]
    fn the_noise_spread_matches_epsilon() {
        for epsilon_per_week in [1.0, 4.0] {
            let budget = Budget { epsilon_per_week };
            let noise = Noise::new(budget, 10).unwrap();
            let draws = 20_000;
            let sample: Vec<i64> = (0..draws)
                .map(|_| noise.count(1_000).unwrap() - 1_000)
                .collect();
            let n = draws as f64;
            let mean = sample.iter().sum::<i64>() as f64 / n;
            let var = sample
                .iter()
                .map(|x| (*x as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let want = variance(budget.scale());
            // The variance estimate's relative standard error is about
            // sqrt(5 / n) = 1.6%; allow 8%.
            assert!(
                (var / want - 1.0).abs() < 0.08,
                "epsilon {epsilon_per_week}: variance {var}, want {want}"
            );
            assert!(mean.abs() < 6.0 * (want / n).sqrt(), "mean {mean}");
            let one = budget.accuracy(1) as i64;
            let within = sample.iter().filter(|x| x.abs() <= one).count() as f64 / n;
            assert!((0.94..0.975).contains(&within), "±{one}: {within}");
            let week = budget.accuracy(7) as i64;
            let weeks: Vec<i64> = sample.chunks_exact(7).map(|c| c.iter().sum()).collect();
            let within =
                weeks.iter().filter(|x| x.abs() <= week).count() as f64 / weeks.len() as f64;
            assert!((0.94..0.97).contains(&within), "±{week}: {within}");
        }
    }

    #[test]
    fn accuracy_grows_with_the_cells_summed_and_shrinks_with_epsilon() {
        for epsilon_per_week in [0.05, 1.0, 20.0] {
            let budget = Budget { epsilon_per_week };
            // One cell agrees with OpenDP's own accuracy formula.
            let opendp =
                opendp::accuracy::discrete_laplacian_scale_to_accuracy(budget.scale(), 0.05)
                    .unwrap();
            let one = budget.accuracy(1) as f64;
            assert!((one - opendp).abs() <= 1.0, "{one} vs OpenDP's {opendp}");
            // Sums are close to the normal approximation 1.96 sd.
            for cells in [7, 84] {
                let sd = (f64::from(cells) * variance(budget.scale())).sqrt();
                let n = budget.accuracy(cells) as f64;
                assert!(
                    (n / (1.96 * sd) - 1.0).abs() < 0.05 || (n - 1.96 * sd).abs() <= 2.0,
                    "epsilon {epsilon_per_week}, {cells} cells: {n} vs {}",
                    1.96 * sd
                );
            }
        }
        let budget = Budget::default();
        let (one, week, window) = (budget.accuracy(1), budget.accuracy(7), budget.accuracy(84));
        assert!(one < week && week < window, "{one} {week} {window}");
        assert!(
            Budget {
                epsilon_per_week: 2.0
            }
            .accuracy(7)
                < week
        );
    }

    // The figures go to docs/benchmarks.md, so the test prints them
    // (`cargo test -p telemetry-collector --lib one_percent -- --nocapture`).
    #[allow(clippy::print_stdout)]
    #[test]
    fn weekly_installs_of_a_real_sized_project_stay_within_one_percent() {
        // 10,000 installs a week at the default epsilon: the published week
        // is the sum of seven noisy days.
        let budget = Budget::default();
        let noise = Noise::new(budget, 10).unwrap();
        let weeks = 2_000;
        let mut errors: Vec<i64> = (0..weeks)
            .map(|_| {
                (0..7)
                    .map(|d| {
                        let truth = if d < 3 { 1_429 } else { 1_428 };
                        noise.count(truth).unwrap() - truth
                    })
                    .sum::<i64>()
                    .abs()
            })
            .collect();
        errors.sort_unstable();
        let within = errors.iter().filter(|e| **e <= 100).count() as f64 / weeks as f64;
        let p95 = errors[weeks * 95 / 100];
        let max = errors[weeks - 1];
        println!(
            "10,000 installs/week at epsilon {}: {:.1}% of weeks within 1%; 95th percentile \
             error {p95} ({:.2}%), largest {max}; stated ±{}",
            budget.epsilon_per_week,
            within * 100.0,
            p95 as f64 / 100.0,
            budget.accuracy(7)
        );
        assert!(within >= 0.95, "{within}");
        assert!(budget.accuracy(7) <= 100);
    }

    #[test]
    fn the_ledger_counts_disjoint_days_once_and_statistics_apart() {
        let week: Day = "2026-11-16".parse().unwrap();
        let cell = |d: i32, statistic: &str, key: &str| ReleasedCell {
            project: "p".into(),
            period: week.add_days(d),
            statistic: statistic.into(),
            key: key.into(),
            value: 0,
            epsilon: 0.1,
            released_on: week,
        };
        let cells: Vec<ReleasedCell> = (0..7)
            .map(|d| cell(d, "installs", ""))
            .chain((0..7).map(|d| cell(d, "active", "")))
            .chain([cell(0, "os.installs", ""), cell(0, "os.installs", "linux")])
            .collect();
        let mut ledger = Ledger::of(&cells);
        assert!((ledger.spent(week) - 0.3).abs() < 1e-12);
        assert_eq!(ledger.spent(week.add_days(7)), 0.0);
        assert!(ledger.try_spend(week, "setup_started", 0.5, 1.0));
        assert!(!ledger.try_spend(week, "setup_completed", 0.5, 1.0));
        assert!((ledger.spent(week) - 0.8).abs() < 1e-12);
    }
}
