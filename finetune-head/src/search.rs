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

/// Levels per dimension for a grid of at most `budget` points: categorical dimensions
/// take all their options when their product fits (the reals share what is left),
/// otherwise reals get one level and the options are shared out. Within a group the
/// levels stay as even as possible while the product grows as far as it can.
fn grid_levels(space: &Space, budget: usize) -> Vec<usize> {
    let options: Vec<Option<usize>> = space
        .dims
        .iter()
        .map(|(_, p)| match p {
            Param::Choice(o) => Some(o.len()),
            _ => None,
        })
        .collect();
    let all_options = options
        .iter()
        .flatten()
        .try_fold(1usize, |acc, &k| acc.checked_mul(k))
        .filter(|&product| product <= budget);
    match all_options {
        Some(product) => {
            let caps: Vec<usize> = options.iter().map(|o| o.unwrap_or(usize::MAX)).collect();
            let fixed: Vec<bool> = options.iter().map(Option::is_some).collect();
            let mut levels: Vec<usize> = options.iter().map(|o| o.unwrap_or(1)).collect();
            share_out(&mut levels, &caps, &fixed, budget / product);
            levels
        }
        None => {
            let caps: Vec<usize> = options.iter().map(|o| o.unwrap_or(1)).collect();
            let mut levels = vec![1; caps.len()];
            share_out(&mut levels, &caps, &vec![false; caps.len()], budget);
            levels
        }
    }
}

/// Raises the levels not `fixed`, lowest first (then in dimension order), up to their
/// caps, while the product of the raised ones stays within `budget`.
fn share_out(levels: &mut [usize], caps: &[usize], fixed: &[bool], budget: usize) {
    let product = |levels: &[usize]| -> usize {
        levels
            .iter()
            .zip(fixed)
            .filter(|(_, f)| !**f)
            .fold(1usize, |acc, (l, _)| acc.saturating_mul(*l))
    };
    loop {
        let mut order: Vec<usize> = (0..levels.len())
            .filter(|&d| !fixed[d] && levels[d] < caps[d])
            .collect();
        order.sort_by_key(|&d| (levels[d], d));
        let raised = order.into_iter().find(|&d| {
            levels[d] += 1;
            let fits = product(levels) <= budget;
            levels[d] -= 1;
            fits
        });
        match raised {
            Some(d) => levels[d] += 1,
            None => return,
        }
    }
}

/// The grid of at most `budget` points (none for a budget of 0), the first dimension
/// varying slowest. A real with `n` levels takes `n` evenly spaced values on its scale,
/// endpoints included (its midpoint when `n = 1`); a choice with fewer levels than
/// options takes evenly spaced options starting with the first.
fn grid(space: &Space, budget: usize) -> Vec<Point> {
    if budget == 0 {
        return Vec::new();
    }
    let axes: Vec<Vec<Value>> = space
        .dims
        .iter()
        .zip(grid_levels(space, budget))
        .map(|((_, param), n)| {
            let at = |i: usize| {
                if n == 1 {
                    0.5
                } else {
                    i as f64 / (n - 1) as f64
                }
            };
            (0..n)
                .map(|i| match param {
                    Param::Choice(options) => Value::Index(if n == 1 {
                        0
                    } else {
                        (i * (options.len() - 1) + (n - 1) / 2) / (n - 1)
                    }),
                    _ => Value::Real(param.value_at(at(i))),
                })
                .collect()
        })
        .collect();
    let mut points = vec![Vec::with_capacity(axes.len())];
    for axis in &axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push(*v);
                    p
                })
            })
            .collect();
    }
    points
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

/// Tree-structured Parzen Estimator: suggesting the next point from finished trials.
mod tpe {
    use super::{Param, Point, Rng, Space, Trial, Value};

    /// Share of the finished trials that counts as good.
    const GAMMA: f64 = 0.25;
    /// Candidate points drawn from `l(x)` per suggestion (hyperopt's and Optuna's 24).
    const CANDIDATES: usize = 24;
    /// Centre of the prior component of a real dimension's mixture (on the unit scale).
    const PRIOR_MU: f64 = 0.5;
    /// Width of that prior component: the whole range.
    const PRIOR_SIGMA: f64 = 1.0;
    /// Pseudo-observations each option of a categorical dimension starts with.
    ///
    /// hyperopt uses 1, which lets the search lock onto a mediocre option for good: an
    /// option whose few early trials came with bad values elsewhere then scores a lower
    /// `l/g` than the one the search keeps repeating. With `a` bad observations and no
    /// good one, an option is retried while `a` stays below about `2 · CHOICE_PRIOR`
    /// (for `GAMMA = 0.25`). On the test problem (3 options, 40 trials) 5 cut the runs
    /// stuck on a wrong option from 7% to none, at a small cost in exploitation.
    const CHOICE_PRIOR: f64 = 5.0;

    /// The next point to evaluate given the `done` trials and the `pending` points
    /// already suggested in this round (which count as failed).
    ///
    /// With the best `ceil(GAMMA * n)` observations as good and the rest as bad, each
    /// dimension gets its own `l` and `g` (the "tree" of the method's name reduces to
    /// independent dimensions here, so `l(x)` is a product over dimensions).
    /// `CANDIDATES` points are drawn from `l` and the one with the highest `l(x) / g(x)`
    /// is returned. Choosing whole points, rather than the best value of each dimension
    /// apart, keeps some randomness in the pick, which helped on both real and
    /// categorical test problems.
    pub(super) fn suggest<T>(
        space: &Space,
        done: &[Trial<T>],
        pending: &[Point],
        rng: &mut Rng,
    ) -> Point {
        // Observations, best first; failures (non-finite) last, then the earliest first.
        let mut observed: Vec<(f64, &Point)> = done
            .iter()
            .map(|t| (t.score, &t.point))
            .chain(pending.iter().map(|p| (f64::NEG_INFINITY, p)))
            .map(|(s, p)| (if s.is_finite() { s } else { f64::NEG_INFINITY }, p))
            .collect();
        if observed.len() < 2 {
            return super::random_point(space, rng);
        }
        observed.sort_by(|a, b| b.0.total_cmp(&a.0)); // stable: ties keep trial order
        let n = observed.len();
        let n_good = ((GAMMA * n as f64).ceil() as usize).clamp(1, n - 1);
        let (good, bad) = observed.split_at(n_good);

        let models: Vec<Model> = space
            .dims
            .iter()
            .enumerate()
            .map(|(d, (_, param))| match param {
                Param::Choice(options) => Model::Choice(
                    Categorical::fit(options.len(), good.iter().map(|o| o.1[d])),
                    Categorical::fit(options.len(), bad.iter().map(|o| o.1[d])),
                ),
                _ => {
                    let unit = |o: &(f64, &Point)| param.position(o.1[d].as_f64()).clamp(0.0, 1.0);
                    Model::Real(
                        Parzen::fit(good.iter().map(unit).collect()),
                        Parzen::fit(bad.iter().map(unit).collect()),
                    )
                }
            })
            .collect();
        let mut best: Option<(Vec<f64>, f64)> = None;
        for _ in 0..CANDIDATES {
            let candidate: Vec<f64> = models.iter().map(|m| m.sample(rng)).collect();
            let ratio: f64 = models
                .iter()
                .zip(&candidate)
                .map(|(m, &x)| m.log_ratio(x))
                .sum();
            if best.as_ref().is_none_or(|b| ratio > b.1) {
                best = Some((candidate, ratio));
            }
        }
        let unit_point = best.expect("CANDIDATES > 0").0;
        space
            .dims
            .iter()
            .zip(unit_point)
            .map(|((_, param), x)| match param {
                Param::Choice(_) => Value::Index(x as usize),
                _ => Value::Real(param.value_at(x)),
            })
            .collect()
    }

    /// The densities of one dimension: `l` over the good trials, `g` over the bad.
    enum Model {
        Real(Parzen, Parzen),
        Choice(Categorical, Categorical),
    }

    impl Model {
        /// A draw from `l`: a position on the unit scale, or an option index.
        fn sample(&self, rng: &mut Rng) -> f64 {
            match self {
                Model::Real(l, _) => l.sample(rng),
                Model::Choice(l, _) => l.sample(rng) as f64,
            }
        }

        /// `ln l(x) - ln g(x)`.
        fn log_ratio(&self, x: f64) -> f64 {
            match self {
                Model::Real(l, g) => l.log_pdf(x) - g.log_pdf(x),
                Model::Choice(l, g) => l.p[x as usize].ln() - g.p[x as usize].ln(),
            }
        }
    }

    /// Smoothed option frequencies: each option starts with `CHOICE_PRIOR` counts.
    pub(super) struct Categorical {
        /// Probability of each option.
        pub(super) p: Vec<f64>,
    }

    impl Categorical {
        pub(super) fn fit(options: usize, values: impl Iterator<Item = Value>) -> Self {
            let mut counts = vec![CHOICE_PRIOR; options];
            for v in values {
                if let Some(i) = v.as_index().filter(|&i| i < options) {
                    counts[i] += 1.0;
                }
            }
            let total: f64 = counts.iter().sum();
            Categorical {
                p: counts.into_iter().map(|c| c / total).collect(),
            }
        }

        fn sample(&self, rng: &mut Rng) -> usize {
            let mut u = rng.unit();
            for (k, p) in self.p.iter().enumerate() {
                if u < *p {
                    return k;
                }
                u -= p;
            }
            self.p.len() - 1
        }
    }

    /// Adaptive Parzen estimator on `[0, 1]` (hyperopt's `adaptive_parzen_normal`): a
    /// mixture of Gaussians truncated to the range, one per observation plus the prior
    /// (worth one observation), equally weighted. Each observation's width is the larger distance to its
    /// neighbours, clipped to `[PRIOR_SIGMA / min(100, m), PRIOR_SIGMA]` for `m`
    /// components: wide where observations are sparse, narrow where they cluster.
    pub(super) struct Parzen {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        /// Log of each component's weight over its mass within `[0, 1]`.
        log_norms: Vec<f64>,
    }

    impl Parzen {
        pub(super) fn fit(mut mus: Vec<f64>) -> Self {
            mus.sort_by(f64::total_cmp);
            let prior = mus.partition_point(|&m| m < PRIOR_MU);
            mus.insert(prior, PRIOR_MU);
            let m = mus.len();
            let min_sigma = PRIOR_SIGMA / (m.min(100) as f64);
            let sigmas: Vec<f64> = (0..m)
                .map(|i| {
                    if i == prior || m == 1 {
                        return PRIOR_SIGMA;
                    }
                    let left = if i > 0 { mus[i] - mus[i - 1] } else { 0.0 };
                    let right = if i + 1 < m { mus[i + 1] - mus[i] } else { 0.0 };
                    left.max(right).clamp(min_sigma, PRIOR_SIGMA)
                })
                .collect();
            let log_weight = -(m as f64).ln(); // all components equal
            let log_norms = mus
                .iter()
                .zip(&sigmas)
                .map(|(&mu, &sigma)| {
                    let mass = normal_cdf((1.0 - mu) / sigma) - normal_cdf(-mu / sigma);
                    log_weight - mass.max(1e-300).ln()
                })
                .collect();
            Parzen {
                mus,
                sigmas,
                log_norms,
            }
        }

        /// A draw: a component uniformly, then its Gaussian, redrawn until within
        /// `[0, 1]` (clamped after 100 tries, which the widths make unlikely).
        pub(super) fn sample(&self, rng: &mut Rng) -> f64 {
            let k = rng.below(self.mus.len());
            let mut x = 0.0;
            for _ in 0..100 {
                x = self.mus[k] + self.sigmas[k] * rng.gaussian();
                if (0.0..=1.0).contains(&x) {
                    return x;
                }
            }
            x.clamp(0.0, 1.0)
        }

        /// Log density at `x`.
        pub(super) fn log_pdf(&self, x: f64) -> f64 {
            const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_7;
            let terms: Vec<f64> = (0..self.mus.len())
                .map(|k| {
                    let z = (x - self.mus[k]) / self.sigmas[k];
                    self.log_norms[k] - 0.5 * z * z - self.sigmas[k].ln() - LOG_SQRT_2PI
                })
                .collect();
            let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
        }
    }

    /// Standard normal CDF.
    fn normal_cdf(z: f64) -> f64 {
        0.5 * erfc(-z / std::f64::consts::SQRT_2)
    }

    /// Complementary error function, relative error below 1.2e-7 (Numerical Recipes'
    /// `erfcc`, a Chebyshev fit).
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let poly = -z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77))))))));
        let r = t * poly.exp();
        if x >= 0.0 { r } else { 2.0 - r }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn erfc_matches_known_values() {
            for (x, want) in [
                (0.0, 1.0),
                (0.5, 0.479_500_122),
                (1.0, 0.157_299_207),
                (-1.0, 1.842_700_793),
                (2.0, 0.004_677_735),
            ] {
                assert!((erfc(x) - want).abs() < 1e-7, "erfc({x}) = {}", erfc(x));
            }
        }

        #[test]
        fn parzen_density_integrates_to_one_and_peaks_at_data() {
            let p = Parzen::fit(vec![0.2, 0.22, 0.25, 0.9]);
            let n = 20_000;
            let integral: f64 = (0..n)
                .map(|i| p.log_pdf((i as f64 + 0.5) / n as f64).exp())
                .sum::<f64>()
                / n as f64;
            assert!((integral - 1.0).abs() < 1e-3, "integral {integral}");
            assert!(p.log_pdf(0.22) > p.log_pdf(0.6));
            let mut rng = Rng::new(1);
            assert!((0..1000).all(|_| (0.0..=1.0).contains(&p.sample(&mut rng))));
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_space() -> Space {
        Space::default()
            .with("lr", Param::LogUniform { lo: 1e-5, hi: 1e-1 })
            .with("wd", Param::Uniform { lo: 0.0, hi: 1.0 })
            .with(
                "opt",
                Param::Choice(vec!["sgd".into(), "adam".into(), "lion".into()]),
            )
    }

    /// Best at lr = 10^-2.5, wd = 0.3, opt = adam (score 0).
    fn toy(p: &Point) -> f64 {
        let lr = p[0].as_f64().log10();
        let wd = p[1].as_f64();
        let opt_penalty = if p[2] == Value::Index(1) { 0.0 } else { 1.0 };
        -((lr + 2.5).powi(2) + (wd - 0.3).powi(2) + opt_penalty)
    }

    /// Distance to the optimum on the unit scales (a wrong option counts 1).
    fn distance(space: &Space, p: &Point) -> f64 {
        let du =
            space.dims[0].1.position(p[0].as_f64()) - space.dims[0].1.position(10f64.powf(-2.5));
        let dw = p[1].as_f64() - 0.3;
        let dc = if p[2] == Value::Index(1) { 0.0 } else { 1.0 };
        (du * du + dw * dw + dc).sqrt()
    }

    #[test]
    fn grid_covers_endpoints_and_fills_the_budget() {
        let space = toy_space();
        // 3 options fit; the reals share 40 / 3 = 13: 4 × 3 levels.
        let trials = run(&space, Method::Grid, 40, 1, 0, None, |_| (0.0, ()));
        assert_eq!(trials.len(), 36);
        assert_eq!(grid_levels(&space, 40), vec![4, 3, 3]);
        let lrs: Vec<f64> = trials.iter().map(|t| t.point[0].as_f64()).collect();
        assert_eq!(lrs.iter().copied().fold(f64::INFINITY, f64::min), 1e-5);
        assert_eq!(lrs.iter().copied().fold(0.0, f64::max), 1e-1);
        let mut distinct: Vec<f64> = lrs.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        // Evenly spaced on the log scale: 1e-5, 1e-5 · 10^(4/3), ...
        for (i, x) in distinct.iter().enumerate() {
            assert!((x.log10() - (-5.0 + 4.0 * i as f64 / 3.0)).abs() < 1e-12);
        }
        let wds: Vec<f64> = trials.iter().map(|t| t.point[1].as_f64()).collect();
        assert!(wds.contains(&0.0) && wds.contains(&0.5) && wds.contains(&1.0));
        for k in 0..3 {
            assert!(trials.iter().any(|t| t.point[2] == Value::Index(k)));
        }
        // First dimension slowest; every point distinct; indices in order.
        assert_eq!(
            trials[0].point,
            vec![Value::Real(1e-5), Value::Real(0.0), Value::Index(0)]
        );
        assert_eq!(trials[1].point[2], Value::Index(1));
        for (i, t) in trials.iter().enumerate() {
            assert_eq!(t.index, i);
            assert!(trials[..i].iter().all(|u| u.point != t.point));
        }
    }

    #[test]
    fn grid_level_rules() {
        let reals = |n: usize| {
            (0..n).fold(Space::default(), |s, i| {
                s.with(format!("x{i}"), Param::Uniform { lo: 0.0, hi: 1.0 })
            })
        };
        assert_eq!(grid_levels(&reals(2), 7), vec![3, 2]);
        assert_eq!(grid_levels(&reals(2), 9), vec![3, 3]);
        assert_eq!(grid_levels(&reals(3), 30), vec![3, 3, 3]);
        assert_eq!(grid_levels(&reals(1), 1), vec![1]);
        // One level: the midpoint on its scale.
        let log = Space::default().with("lr", Param::LogUniform { lo: 1e-4, hi: 1.0 });
        let g = grid(&log, 1);
        assert!((g[0][0].as_f64() - 1e-2).abs() < 1e-15);
        // Options that do not all fit: reals get one level, options are shared out.
        let many = Space::default()
            .with("a", Param::Choice((0..4).map(|i| i.to_string()).collect()))
            .with("b", Param::Choice((0..5).map(|i| i.to_string()).collect()))
            .with("x", Param::Uniform { lo: 0.0, hi: 1.0 });
        assert_eq!(grid_levels(&many, 10), vec![3, 3, 1]);
        let g = grid(&many, 10);
        assert_eq!(g.len(), 9);
        let firsts: Vec<_> = g.iter().step_by(3).map(|p| p[0]).collect();
        assert_eq!(
            firsts,
            vec![Value::Index(0), Value::Index(2), Value::Index(3)]
        );
        assert!(g.iter().all(|p| p[2] == Value::Real(0.5)));
        // Only options, fewer than the budget: the grid runs once.
        let small = Space::default().with("a", Param::Choice(vec!["x".into(), "y".into()]));
        let trials = run(&small, Method::Grid, 10, 3, 0, None, |_| (0.0, ()));
        assert_eq!(trials.len(), 2);
        assert!(run(&small, Method::Grid, 0, 3, 0, None, |_| (0.0, ())).is_empty());
    }

    #[test]
    fn random_points_are_within_bounds() {
        let space = toy_space();
        let trials = run(&space, Method::Random, 500, 4, 7, None, |p| (toy(p), ()));
        assert_eq!(trials.len(), 500);
        for t in &trials {
            space.check_point(&t.point).unwrap();
            assert!(matches!(t.point[0], Value::Real(_)) && matches!(t.point[2], Value::Index(_)));
        }
        // Uniform on the log scale: about a quarter of the draws per decade.
        let low = trials.iter().filter(|t| t.point[0].as_f64() < 1e-4).count();
        assert!((90..160).contains(&low), "{low} of 500 below 1e-4");
        for k in 0..3 {
            let n = trials
                .iter()
                .filter(|t| t.point[2] == Value::Index(k))
                .count();
            assert!((130..200).contains(&n), "option {k}: {n}");
        }
    }

    #[test]
    fn runs_are_deterministic_whatever_the_threads() {
        let space = toy_space();
        let key = |trials: &[Trial<usize>]| -> Vec<(usize, Point, u64, usize)> {
            trials
                .iter()
                .map(|t| (t.index, t.point.clone(), t.score.to_bits(), t.extra))
                .collect()
        };
        for method in [Method::Grid, Method::Random] {
            let one = run(&space, method, 30, 1, 42, None, |p| (toy(p), p.len()));
            let two = run(&space, method, 30, 2, 42, None, |p| (toy(p), p.len()));
            let eight = run(&space, method, 30, 8, 42, None, |p| (toy(p), p.len()));
            assert_eq!(key(&one), key(&two), "{method}");
            assert_eq!(key(&one), key(&eight), "{method}");
        }
        let other = run(&space, Method::Random, 30, 1, 43, None, |p| (toy(p), 0));
        let one = run(&space, Method::Random, 30, 1, 42, None, |p| (toy(p), 0));
        assert_ne!(one[0].point, other[0].point);
        // Bayes: the same for the same thread count, whatever the timing.
        for threads in [1, 3] {
            let a = run(&space, Method::Bayes, 25, threads, 5, None, |p| (toy(p), 0));
            let b = run(&space, Method::Bayes, 25, threads, 5, None, |p| {
                // Uneven durations shuffle which worker finishes first.
                std::thread::sleep(std::time::Duration::from_micros(
                    (p[1].as_f64() * 300.0) as u64,
                ));
                (toy(p), 0)
            });
            assert_eq!(key(&a), key(&b), "bayes, {threads} threads");
            assert_eq!(a.len(), 25);
        }
    }

    #[test]
    fn first_point_is_trial_zero() {
        let space = toy_space();
        let default = vec![Value::Real(1e-3), Value::Real(0.01), Value::Index(2)];
        for method in [Method::Grid, Method::Random, Method::Bayes] {
            let trials = run(&space, method, 12, 3, 1, Some(default.clone()), |p| {
                (toy(p), ())
            });
            assert_eq!(trials[0].point, default, "{method}");
            assert_eq!(trials[0].index, 0);
            assert!(trials.len() <= 12, "{method}");
            if method != Method::Grid {
                assert_eq!(trials.len(), 12);
            }
        }
        // The grid gets the other 11: 3 options × 3 × 1 levels of the reals (11 / 3 = 3).
        let grid = run(
            &space,
            Method::Grid,
            12,
            1,
            0,
            Some(default.clone()),
            |_| (0.0, ()),
        );
        assert_eq!(grid.len(), 1 + 9);
        // An integer for a real reads as that number.
        let loose = vec![Value::Real(1e-3), Value::Index(0), Value::Index(2)];
        let trials = run(&space, Method::Random, 2, 1, 1, Some(loose), |p| {
            (toy(p), ())
        });
        assert_eq!(trials[0].point[1], Value::Real(0.0));
        // The default wins ties.
        let flat = run(
            &space,
            Method::Random,
            5,
            2,
            1,
            Some(default.clone()),
            |_| (1.0, ()),
        );
        assert_eq!(best(&flat).unwrap().index, 0);
    }

    #[test]
    fn tpe_beats_random_and_concentrates_near_the_optimum() {
        let space = toy_space();
        let seeds = 20;
        let (mut best_tpe, mut best_random) = (0.0, 0.0);
        let (mut late_tpe, mut late_random) = (Vec::new(), Vec::new());
        for seed in 0..seeds {
            let tpe = run(&space, Method::Bayes, 40, 1, seed, None, |p| (toy(p), ()));
            let random = run(&space, Method::Random, 40, 1, seed, None, |p| (toy(p), ()));
            best_tpe += best(&tpe).unwrap().score / seeds as f64;
            best_random += best(&random).unwrap().score / seeds as f64;
            late_tpe.extend(tpe[20..].iter().map(|t| distance(&space, &t.point)));
            late_random.extend(random[20..].iter().map(|t| distance(&space, &t.point)));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (late_tpe, late_random) = (median(&mut late_tpe), median(&mut late_random));
        eprintln!(
            "best: tpe {best_tpe:.4}, random {best_random:.4}; late median distance: tpe {late_tpe:.3}, random {late_random:.3}"
        );
        assert!(
            best_tpe > best_random,
            "best: tpe {best_tpe}, random {best_random}"
        );
        assert!(
            late_tpe < 0.5 * late_random,
            "distance: tpe {late_tpe}, random {late_random}"
        );
    }

    #[test]
    fn tpe_in_rounds_still_learns() {
        let space = toy_space();
        let (mut tpe, mut random) = (0.0, 0.0);
        for seed in 0..10 {
            let t = run(&space, Method::Bayes, 40, 4, seed, None, |p| (toy(p), ()));
            let r = run(&space, Method::Random, 40, 4, seed, None, |p| (toy(p), ()));
            // Points within a round differ.
            for round in t[8..].chunks(4) {
                for (i, a) in round.iter().enumerate() {
                    assert!(round[..i].iter().all(|b| b.point != a.point));
                }
            }
            tpe += t[20..]
                .iter()
                .map(|t| distance(&space, &t.point))
                .sum::<f64>();
            r.iter()
                .skip(20)
                .for_each(|t| random += distance(&space, &t.point));
        }
        assert!(
            tpe < 0.7 * random,
            "mean late distance: tpe {tpe}, random {random}"
        );
    }

    #[test]
    fn failed_trials_count_as_worst() {
        let space = toy_space();
        // Fails (NaN, or infinities) whenever lr > 1e-2: the search must steer away.
        let flaky = |p: &Point| {
            let lr = p[0].as_f64();
            if lr > 1e-2 {
                (if lr > 5e-2 { f64::NAN } else { f64::INFINITY }, ())
            } else {
                (toy(p), ())
            }
        };
        for method in [Method::Grid, Method::Random, Method::Bayes] {
            let trials = run(&space, method, 30, 2, 3, None, flaky);
            assert!(trials.len() <= 30 && !trials.is_empty());
            let b = best(&trials).unwrap();
            assert!(
                b.score.is_finite() && b.point[0].as_f64() <= 1e-2,
                "{method}"
            );
        }
        let bayes = run(&space, Method::Bayes, 40, 1, 3, None, flaky);
        let late_failures = bayes[20..].iter().filter(|t| !t.score.is_finite()).count();
        assert!(late_failures < 5, "{late_failures} late failures");
        // Everything failing: no best, no panic.
        let all = run(&space, Method::Bayes, 15, 2, 0, None, |_| (f64::NAN, ()));
        assert_eq!(all.len(), 15);
        assert!(best(&all).is_none());
    }

    #[test]
    #[should_panic(expected = "objective failed at trial 3")]
    fn a_panicking_objective_passes_its_panic_on() {
        let space = toy_space();
        let calls = AtomicUsize::new(0);
        run(&space, Method::Random, 50, 4, 0, None, |p| {
            let i = calls.fetch_add(1, Ordering::Relaxed);
            if i == 3 {
                panic!("objective failed at trial 3");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            (toy(p), ())
        });
    }

    #[test]
    fn validate_rejects_bad_spaces() {
        assert!(toy_space().validate().is_ok());
        let bad = [
            Space::default(),
            Space::default().with("x", Param::Uniform { lo: 1.0, hi: 1.0 }),
            Space::default().with(
                "x",
                Param::Uniform {
                    lo: 0.0,
                    hi: f64::INFINITY,
                },
            ),
            Space::default().with("x", Param::LogUniform { lo: 0.0, hi: 1.0 }),
            Space::default().with("x", Param::Choice(vec![])),
            Space::default().with("x", Param::Choice(vec!["a".into(), "a".into()])),
            toy_space().with("lr", Param::Uniform { lo: 0.0, hi: 1.0 }),
            Space::default().with("", Param::Uniform { lo: 0.0, hi: 1.0 }),
        ];
        for space in bad {
            assert!(space.validate().is_err(), "{space:?}");
        }
        let space = toy_space();
        assert!(
            space
                .check_point(&vec![Value::Real(1e-3), Value::Real(0.5)])
                .is_err()
        );
        assert!(
            space
                .check_point(&vec![Value::Real(1.0), Value::Real(0.5), Value::Index(0)])
                .is_err()
        );
        assert!(
            space
                .check_point(&vec![Value::Real(1e-3), Value::Real(0.5), Value::Index(3)])
                .is_err()
        );
        assert!(
            space
                .check_point(&vec![Value::Real(1e-3), Value::Real(0.5), Value::Real(1.0)])
                .is_err()
        );
    }

    #[test]
    fn describe_names_options_and_round_trips_json() {
        let space = toy_space();
        let point = vec![Value::Real(1e-3), Value::Real(0.25), Value::Index(1)];
        let d = space.describe(&point);
        assert_eq!(
            serde_json::Value::Object(d),
            serde_json::json!({"lr": 1e-3, "wd": 0.25, "opt": "adam"})
        );
        assert_eq!(space.real(&point, "wd"), Some(0.25));
        assert_eq!(space.choice(&point, "opt"), Some("adam"));
        assert_eq!(space.choice(&point, "lr"), None);
        assert_eq!(space.real(&point, "nope"), None);

        let json = serde_json::to_string(&space).unwrap();
        assert!(
            json.contains(r#"{"log_uniform":{"lo":0.00001,"hi":0.1}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Space>(&json).unwrap(), space);
        let trial = Trial {
            index: 0,
            point: vec![Value::Real(2.0), Value::Real(1e-7), Value::Index(2)],
            score: 0.5,
            extra: "x".to_string(),
        };
        let back: Trial<String> =
            serde_json::from_str(&serde_json::to_string(&trial).unwrap()).unwrap();
        assert_eq!(back, trial);
        assert_eq!(serde_json::to_string(&Method::Bayes).unwrap(), r#""bayes""#);
        assert_eq!("TPE".parse::<Method>(), Ok(Method::Bayes));
        assert!("annealing".parse::<Method>().is_err());
    }
}
