//! Hyperparameter search: grid, random and Bayesian (TPE) search over a small space of
//! real and categorical parameters, with the trials evaluated on worker threads.
//!
//! - **Grid** evaluates every combination of a few levels per dimension: all options of
//!   a categorical dimension (when they fit the budget) and evenly spaced values of a
//!   real one on its own scale (log or linear), endpoints included. Exhaustive and easy
//!   to read, but the number of levels per dimension shrinks quickly as dimensions add up.
//! - **Random** draws every point independently, uniformly on each dimension's scale.
//!   With the same budget it covers each important dimension with more distinct values
//!   than a grid (Bergstra & Bengio 2012, "Random search for hyper-parameter
//!   optimization").
//! - **Bayes** is the Tree-structured Parzen Estimator (Bergstra, Bardenet, Bengio & Kégl
//!   2011, "Algorithms for hyper-parameter optimization"): after a few random trials
//!   ([`bayes_startup`]) it splits the finished ones into the best quarter (good) and the
//!   rest (bad), fits a density `l(x)` to the good points and `g(x)` to the bad ones, one
//!   dimension at a time, and evaluates next the candidate drawn from `l` with the highest
//!   `l(x) / g(x)`: the point most typical of good trials relative to bad ones. It spends
//!   its later trials near what worked instead of uniformly. The densities are hyperopt's
//!   (adaptive Parzen windows on each real's unit scale, smoothed counts for options);
//!   two choices differ, both for robustness: candidates are whole points, and options
//!   get a stronger prior (see `tpe::CHOICE_PRIOR` in the code).
//!
//! Scores are maximized; a non-finite score (a failed trial) counts as the worst. Every
//! run is deterministic for a seed: the point of trial `i` never depends on which thread
//! ran what or when (see [`run`]).
//!
//! Files: the space, the methods and the runner are here; `tpe.rs` is the Bayesian
//! method's estimator.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// One dimension of the search space.
///
/// In JSON: `{"log_uniform": {"lo": 1e-4, "hi": 0.1}}`, `{"uniform": {"lo": 0, "hi": 0.5}}`
/// or `{"choice": ["sgd", "adam"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// Real in `[lo, hi]`, searched on a log scale (`lo > 0`): for rates and strengths
    /// whose useful values span orders of magnitude.
    LogUniform {
        /// Smallest value.
        lo: f64,
        /// Largest value.
        hi: f64,
    },
    /// Real in `[lo, hi]`, searched on a linear scale.
    Uniform {
        /// Smallest value.
        lo: f64,
        /// Largest value.
        hi: f64,
    },
    /// One of these options (categorical; the point holds the option's index). Grid
    /// search takes them from the first when not all fit, so put the usual one first.
    Choice(Vec<String>),
}

impl Param {
    /// Position of the real `x` on this dimension's scale: 0 at `lo`, 1 at `hi`.
    fn position(&self, x: f64) -> f64 {
        match *self {
            Param::LogUniform { lo, hi } => (x.ln() - lo.ln()) / (hi.ln() - lo.ln()),
            Param::Uniform { lo, hi } => (x - lo) / (hi - lo),
            Param::Choice(_) => unreachable!("position on a categorical dimension"),
        }
    }

    /// The real at position `u` (clamped to `[0, 1]`) of this dimension's scale; the
    /// endpoints come out exactly as `lo` and `hi`.
    fn value_at(&self, u: f64) -> f64 {
        let (lo, hi) = match *self {
            Param::LogUniform { lo, hi } | Param::Uniform { lo, hi } => (lo, hi),
            Param::Choice(_) => unreachable!("value_at on a categorical dimension"),
        };
        if u.is_nan() || u <= 0.0 {
            return lo;
        }
        if u >= 1.0 {
            return hi;
        }
        let x = match self {
            Param::LogUniform { .. } => (lo.ln() + u * (hi.ln() - lo.ln())).exp(),
            _ => lo + u * (hi - lo),
        };
        x.clamp(lo, hi)
    }
}

/// The search space: named dimensions, in the order a [`Point`] holds their values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// Name and range of each dimension.
    pub dims: Vec<(String, Param)>,
}

impl Space {
    /// This space with one more dimension, for building one inline.
    pub fn with(mut self, name: impl Into<String>, param: Param) -> Self {
        self.dims.push((name.into(), param));
        self
    }

    /// Checks the space makes sense: at least one dimension, unique non-empty names,
    /// finite bounds with `lo < hi`, `lo > 0` on a log scale, and non-empty choices
    /// with distinct options. [`run`] panics on a space that fails this.
    pub fn validate(&self) -> Result<(), String> {
        if self.dims.is_empty() {
            return Err("the search space has no dimensions".into());
        }
        for (i, (name, param)) in self.dims.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("dimension {i} has an empty name"));
            }
            if self.dims[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("dimension name {name:?} is used twice"));
            }
            match param {
                Param::LogUniform { lo, hi } | Param::Uniform { lo, hi } => {
                    if !lo.is_finite() || !hi.is_finite() {
                        return Err(format!("{name}: bounds must be finite, got [{lo}, {hi}]"));
                    }
                    if lo >= hi {
                        return Err(format!("{name}: lo must be below hi, got [{lo}, {hi}]"));
                    }
                    if matches!(param, Param::LogUniform { .. }) && *lo <= 0.0 {
                        return Err(format!("{name}: a log scale needs lo > 0, got {lo}"));
                    }
                }
                Param::Choice(options) => {
                    if options.is_empty() {
                        return Err(format!("{name}: no options to choose from"));
                    }
                    for (j, option) in options.iter().enumerate() {
                        if options[..j].contains(option) {
                            return Err(format!("{name}: option {option:?} is listed twice"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that `point` belongs to this space: one value per dimension, reals within
    /// their bounds, option indices in range. An `Index` on a real dimension is accepted
    /// as that number (JSON `3` reads as an index).
    pub fn check_point(&self, point: &Point) -> Result<(), String> {
        if point.len() != self.dims.len() {
            return Err(format!(
                "the point has {} values, the space {} dimensions",
                point.len(),
                self.dims.len()
            ));
        }
        for ((name, param), value) in self.dims.iter().zip(point) {
            match (param, *value) {
                (Param::Choice(options), Value::Index(i)) => {
                    if i >= options.len() {
                        return Err(format!("{name}: option {i} of {}", options.len()));
                    }
                }
                (Param::Choice(_), Value::Real(x)) => {
                    return Err(format!("{name}: {x} where an option index was expected"));
                }
                (Param::LogUniform { lo, hi } | Param::Uniform { lo, hi }, value) => {
                    let x = value.as_f64();
                    if !(*lo..=*hi).contains(&x) {
                        return Err(format!("{name}: {x} is outside [{lo}, {hi}]"));
                    }
                }
            }
        }
        Ok(())
    }

    /// `point` as `{name: value}` for reports: options by their names, reals as numbers.
    /// A value that does not fit its dimension becomes `null`.
    pub fn describe(&self, point: &Point) -> serde_json::Map<String, serde_json::Value> {
        self.dims
            .iter()
            .zip(point)
            .map(|((name, param), value)| {
                let json = match (param, *value) {
                    (Param::Choice(options), Value::Index(i)) => options
                        .get(i)
                        .map_or(serde_json::Value::Null, |o| o.clone().into()),
                    (Param::Choice(_), Value::Real(_)) => serde_json::Value::Null,
                    (_, value) => value.as_f64().into(),
                };
                (name.clone(), json)
            })
            .collect()
    }

    /// The real value of dimension `name` in `point` (`None` for an unknown name or a
    /// categorical dimension).
    pub fn real(&self, point: &Point, name: &str) -> Option<f64> {
        let i = self.dims.iter().position(|(n, _)| n == name)?;
        match (&self.dims[i].1, point.get(i)?) {
            (Param::Choice(_), _) => None,
            (_, value) => Some(value.as_f64()),
        }
    }

    /// The option chosen for dimension `name` in `point` (`None` for an unknown name or
    /// a real dimension).
    pub fn choice<'a>(&'a self, point: &Point, name: &str) -> Option<&'a str> {
        let i = self.dims.iter().position(|(n, _)| n == name)?;
        match (&self.dims[i].1, point.get(i)?) {
            (Param::Choice(options), Value::Index(j)) => options.get(*j).map(String::as_str),
            _ => None,
        }
    }

    /// `point` with each value in its dimension's form (`Index` on a real dimension
    /// becomes `Real`), after [`Space::check_point`].
    fn normalize(&self, point: &Point) -> Result<Point, String> {
        self.check_point(point)?;
        Ok(self
            .dims
            .iter()
            .zip(point)
            .map(|((_, param), value)| match param {
                Param::Choice(_) => *value,
                _ => Value::Real(value.as_f64()),
            })
            .collect())
    }
}

/// The value of one dimension: a real, or an option's index for a [`Param::Choice`].
///
/// Untagged in JSON, `Index` first: `2` reads as an index and `2.0` or `1e-3` as a real
/// (serde_json always writes reals with a `.` or an exponent, so values round-trip).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Index into a [`Param::Choice`]'s options.
    Index(usize),
    /// Value of a real dimension.
    Real(f64),
}

impl Value {
    /// The value as a number (an index as itself).
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Real(x) => x,
            Value::Index(i) => i as f64,
        }
    }

    /// The option index, if this is one.
    pub fn as_index(self) -> Option<usize> {
        match self {
            Value::Index(i) => Some(i),
            Value::Real(_) => None,
        }
    }
}

/// One value per dimension of a [`Space`], in its order.
pub type Point = Vec<Value>;

/// How [`run`] picks the points to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every combination of evenly spaced levels.
    Grid,
    /// Independent uniform draws.
    Random,
    /// Tree-structured Parzen Estimator, after a few random trials.
    Bayes,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Grid => "grid",
            Method::Random => "random",
            Method::Bayes => "bayes",
        })
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    /// `grid`, `random`, or `bayes` (also `tpe`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "grid" => Ok(Method::Grid),
            "random" => Ok(Method::Random),
            "bayes" | "tpe" => Ok(Method::Bayes),
            _ => Err(format!(
                "unknown search method {s:?} (grid, random or bayes)"
            )),
        }
    }
}

/// One evaluated point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial<T> {
    /// Position in the run, from 0.
    pub index: usize,
    /// The hyperparameters evaluated.
    pub point: Point,
    /// What the objective returned: higher is better; non-finite means failed.
    pub score: f64,
    /// Whatever else the objective returned (metrics, a trained model, ...).
    pub extra: T,
}

/// The trial with the highest finite score, the earliest on ties (so a default passed
/// as `first` wins over an equally good point); `None` when every trial failed.
pub fn best<T>(trials: &[Trial<T>]) -> Option<&Trial<T>> {
    trials
        .iter()
        .filter(|t| t.score.is_finite())
        .reduce(|a, b| if b.score > a.score { b } else { a })
}

/// Number of random trials Bayes search starts with (`first` included) before its model
/// takes over: a fifth of the budget, at least 5, at most all of it.
pub fn bayes_startup(trials: usize) -> usize {
    (trials / 5).max(5).min(trials)
}

/// Searches `space` with `method` for the point where `objective` scores highest, and
/// returns every trial sorted by index.
///
/// - `trials` is the total number of evaluations, `first` included. Grid search may run
///   fewer: the largest grid that fits (36 of 40 for 3 options and 2 reals: 3 × 4 × 3),
///   or every combination once when there are fewer (only categorical dimensions).
/// - `first`: when given, trial 0 evaluates exactly this point (the caller's default
///   configuration, so the search never ends worse than the default), and the method
///   fills the other `trials - 1`. It is not deduplicated against the grid.
/// - `threads` workers (at least 1) evaluate trials at once. Grid and random points are
///   all known upfront; the workers take the next one as they finish. Bayes search runs
///   [`bayes_startup`] random trials, then rounds of `threads` points, each suggested
///   from the trials of the rounds before it (within a round, points already suggested
///   count as failed, the "constant liar", which keeps them apart).
/// - `seed` fixes the run: the same arguments give the same points, whatever the thread
///   timing. Grid and random points do not depend on `threads` either; Bayes points do,
///   through the round size (`threads = 1` is fully sequential, the best use of each
///   trial).
///
/// # Panics
///
/// When [`Space::validate`] fails or `first` does not belong to the space (check both
/// beforehand for user input), or when `objective` panics (no new trial starts after
/// that; the panic is passed on once running ones finish).
pub fn run<T: Send>(
    space: &Space,
    method: Method,
    trials: usize,
    threads: usize,
    seed: u64,
    first: Option<Point>,
    objective: impl Fn(&Point) -> (f64, T) + Sync,
) -> Vec<Trial<T>> {
    if let Err(e) = space.validate() {
        panic!("invalid search space: {e}");
    }
    let first = first.map(|p| {
        space
            .normalize(&p)
            .unwrap_or_else(|e| panic!("the first point does not fit the search space: {e}"))
    });
    if trials == 0 {
        return Vec::new();
    }
    let threads = threads.max(1);
    let start = usize::from(first.is_some());
    match method {
        Method::Grid => {
            let points = first
                .into_iter()
                .chain(grid(space, trials - start))
                .collect();
            evaluate(0, points, threads, &objective)
        }
        Method::Random => {
            let points = first
                .into_iter()
                .chain((start..trials).map(|i| random_point(space, &mut Rng::stream(seed, i))))
                .collect();
            evaluate(0, points, threads, &objective)
        }
        Method::Bayes => {
            let startup = first
                .into_iter()
                .chain(
                    (start..bayes_startup(trials))
                        .map(|i| random_point(space, &mut Rng::stream(seed, i))),
                )
                .collect();
            let mut done = evaluate(0, startup, threads, &objective);
            while done.len() < trials {
                let round = threads.min(trials - done.len());
                let mut pending: Vec<Point> = Vec::with_capacity(round);
                for i in done.len()..done.len() + round {
                    let point = tpe::suggest(space, &done, &pending, &mut Rng::stream(seed, i));
                    pending.push(point);
                }
                let results = evaluate(done.len(), pending, threads, &objective);
                done.extend(results);
            }
            done
        }
    }
}

/// Evaluates `points` on up to `threads` workers; trial indices start at `start`.
fn evaluate<T: Send, F: Fn(&Point) -> (f64, T) + Sync>(
    start: usize,
    points: Vec<Point>,
    threads: usize,
    objective: &F,
) -> Vec<Trial<T>> {
    let n = points.len();
    let workers = threads.min(n);
    let mut results: Vec<Option<(f64, T)>> = (0..n).map(|_| None).collect();
    if workers <= 1 {
        for (slot, point) in results.iter_mut().zip(&points) {
            *slot = Some(objective(point));
        }
    } else {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let shared = Mutex::new(&mut results);
        let panicked = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        // Raises `stop` if the objective panics, so no worker starts another trial.
                        struct StopOnPanic<'a>(&'a AtomicBool);
                        impl Drop for StopOnPanic<'_> {
                            fn drop(&mut self) {
                                if std::thread::panicking() {
                                    self.0.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        let _guard = StopOnPanic(&stop);
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            let result = objective(&points[i]);
                            let mut results = shared.lock().unwrap_or_else(|e| e.into_inner());
                            results[i] = Some(result);
                        }
                    })
                })
                .collect();
            // Joined here, so the objective's own panic is passed on, not scope's.
            handles.into_iter().filter_map(|h| h.join().err()).next()
        });
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }
    points
        .into_iter()
        .zip(results)
        .enumerate()
        .map(|(i, (point, result))| {
            let (score, extra) = result.expect("every point was evaluated");
            Trial {
                index: start + i,
                point,
                score,
                extra,
            }
        })
        .collect()
}

/// A point drawn uniformly on each dimension's scale.
fn random_point(space: &Space, rng: &mut Rng) -> Point {
    space
        .dims
        .iter()
        .map(|(_, param)| match param {
            Param::Choice(options) => Value::Index(rng.below(options.len())),
            _ => Value::Real(param.value_at(rng.unit())),
        })
        .collect()
}

mod grid;
#[cfg(test)]
mod tests;
mod tpe;

use grid::grid;
#[cfg(test)]
use grid::grid_levels;

/// The core's SplitMix64 ([`edgetune::rng::Rng`]), so runs repeat exactly for a seed
/// on every platform, with the f64 draws a search needs.
#[derive(Debug, Clone)]
struct Rng(edgetune::rng::Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(edgetune::rng::Rng::new(seed))
    }

    /// The generator for trial `index` of a run seeded with `seed`: independent of the
    /// order trials are suggested or evaluated in.
    fn stream(seed: u64, index: usize) -> Self {
        let mut base = Rng::new(seed);
        let mixed = base.next_u64() ^ Rng::new(index as u64 ^ 0x5EA2_C4D0_0000_0000).next_u64();
        Rng::new(mixed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)`, `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
