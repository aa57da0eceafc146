//! Each mini-batch in [`SHARDS`] shards, each accumulated by its own learner on its own
//! thread and merged in order before the step, so that training gives the same result
//! bit for bit whatever the number of threads; and the per-epoch scoring, sharded alike.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

use anyhow::Result;
use edgetune::{Head, Learner};

use super::Embedded;

/// Shards of every mini-batch: each is accumulated by its own learner and the shards'
/// gradients are merged in order before the step, so the result is the same bit for bit
/// whatever the number of threads that run them.
pub(super) const SHARDS: usize = 2;

/// Sets the flag when dropped: the training workers stop on every way out of the loop.
pub(super) struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The summed loss of the samples `idx` of `data`, accumulated into `learner` (nothing
/// accumulated on an error).
fn accumulate(
    learner: &mut Learner<Vec<f32>>,
    head: &Head<Vec<f32>>,
    data: &Embedded,
    idx: &[usize],
) -> Result<f64> {
    let mut sum = 0.0f64;
    for &i in idx {
        match learner.accumulate(head, &data.x[i], data.y[i]) {
            Ok(l) => sum += f64::from(l),
            Err(e) => {
                learner.discard();
                return Err(e.into());
            }
        }
    }
    Ok(sum)
}

/// Runs `f` on each shard, the shards dealt round-robin to `threads` threads (the
/// caller's among them), and returns the results in shard order.
pub(super) fn on_threads<T: Send, R: Send>(
    items: &mut [T],
    threads: usize,
    f: impl Fn(&mut T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter_mut().map(&f).collect();
    }
    let mut lanes: Vec<Vec<(usize, &mut T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, item) in items.iter_mut().enumerate() {
        lanes[k % threads].push((k, item));
    }
    let f = &f;
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let mut lanes = lanes.into_iter();
        let mine = lanes.next().unwrap_or_default();
        let handles: Vec<_> = lanes
            .map(|lane| {
                s.spawn(move || lane.into_iter().map(|(k, t)| (k, f(t))).collect::<Vec<_>>())
            })
            .collect();
        let mut out: Vec<(usize, R)> = mine.into_iter().map(|(k, t)| (k, f(t))).collect();
        for h in handles {
            out.extend(h.join().expect("a training thread panicked"));
        }
        out
    });
    out.sort_by_key(|(k, _)| *k);
    out.into_iter().map(|(_, r)| r).collect()
}

/// [`super::score`] with the samples split into [`SHARDS`] parts on `threads` threads (the same
/// result for any number of threads).
pub(super) fn score_on(
    head: &Head<Vec<f32>>,
    data: &Embedded,
    threads: usize,
) -> Result<(f64, f64)> {
    if data.is_empty() {
        return Ok((0.0, 0.0));
    }
    let per = data.len().div_ceil(SHARDS);
    let mut parts: Vec<std::ops::Range<usize>> = (0..SHARDS)
        .map(|k| (k * per).min(data.len())..((k + 1) * per).min(data.len()))
        .collect();
    let scored = on_threads(&mut parts, threads, |r| -> Result<(usize, f64)> {
        let mut probs = vec![0.0f32; head.dims().capacity];
        let (mut hits, mut loss) = (0usize, 0.0f64);
        for i in r.clone() {
            let p = head.predict(&data.x[i], &mut probs)?;
            hits += usize::from(p.class == data.y[i]);
            loss -= f64::from(probs[data.y[i]].max(1e-12)).ln();
        }
        Ok((hits, loss))
    });
    let (mut hits, mut loss) = (0usize, 0.0f64);
    for r in scored {
        let (h, l) = r?;
        hits += h;
        loss += l;
    }
    let n = data.len() as f64;
    Ok((hits as f64 / n, loss / n))
}

/// The head being trained, the shards' learners, and the hand-off to the worker threads:
/// the batch in a slot, a generation counter they spin on (a blocking channel's wake-up
/// costs as much as a shard's work on small batches), and a count of shards done.
pub(super) struct Shards<'a> {
    head: RwLock<Head<Vec<f32>>>,
    learners: Vec<Mutex<Learner<Vec<f32>>>>,
    data: &'a Embedded,
    /// Threads running shards: this one (lane 0) and `lanes - 1` workers.
    lanes: usize,
    slot: Mutex<Arc<[usize]>>,
    generation: AtomicUsize,
    finished: AtomicUsize,
    results: Vec<Mutex<Option<Result<f64>>>>,
    stop: AtomicBool,
}

fn failed() -> anyhow::Error {
    anyhow::anyhow!("a training thread failed")
}

/// Spins briefly, then gives the core away (a thread may be waiting for it when threads
/// outnumber cores).
fn spin(spins: &mut u32) {
    *spins += 1;
    if *spins < 1 << 14 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl<'a> Shards<'a> {
    /// `head` trained on `data` with one accumulating learner per shard, on up to
    /// `threads` threads.
    pub(super) fn new(
        head: Head<Vec<f32>>,
        learners: Vec<Learner<Vec<f32>>>,
        data: &'a Embedded,
        threads: usize,
    ) -> Shards<'a> {
        Shards {
            head: RwLock::new(head),
            learners: learners.into_iter().map(Mutex::new).collect(),
            data,
            lanes: threads.clamp(1, SHARDS),
            slot: Mutex::new(Arc::from(Vec::new())),
            generation: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            results: (0..SHARDS).map(|_| Mutex::new(None)).collect(),
            stop: AtomicBool::new(false),
        }
    }

    /// Threads running shards, this one included.
    pub(super) fn lanes(&self) -> usize {
        self.lanes
    }

    /// Stops the workers when dropped.
    pub(super) fn stop_on_drop(&self) -> StopOnDrop<'_> {
        StopOnDrop(&self.stop)
    }

    /// The head, for scoring and early stopping between epochs.
    pub(super) fn head(&self) -> Result<RwLockWriteGuard<'_, Head<Vec<f32>>>> {
        self.head.write().map_err(|_| failed())
    }

    /// The trained head.
    pub(super) fn into_head(self) -> Result<Head<Vec<f32>>> {
        self.head.into_inner().map_err(|_| failed())
    }

    /// Shard k of a batch: the k-th of SHARDS nearly equal runs.
    fn shard(batch: &[usize], k: usize) -> std::ops::Range<usize> {
        let per = batch.len().div_ceil(SHARDS);
        (k * per).min(batch.len())..((k + 1) * per).min(batch.len())
    }

    fn run_shard(&self, batch: &[usize], k: usize) -> Result<f64> {
        let head = self.head.read().map_err(|_| failed())?;
        let mut l = self.learners[k].lock().map_err(|_| failed())?;
        accumulate(&mut l, &head, self.data, &batch[Self::shard(batch, k)])
    }

    /// The loop of worker `lane` (1..): waits for each batch, runs its shards, until
    /// stopped.
    pub(super) fn worker(&self, lane: usize) {
        let mut seen = 0;
        loop {
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == seen {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                spin(&mut spins);
            }
            seen = self.generation.load(Ordering::Acquire);
            let batch = self
                .slot
                .lock()
                .map(|b| b.clone())
                .unwrap_or_else(|_| Arc::from(Vec::new()));
            for k in (lane..SHARDS).step_by(self.lanes) {
                let r = self.run_shard(&batch, k);
                if let Ok(mut slot) = self.results[k].lock() {
                    *slot = Some(r);
                }
                self.finished.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// One mini-batch: its shards accumulated here and on the workers, merged in order
    /// into `learner`, and one step applied to the head. Returns the batch's summed loss.
    pub(super) fn step(&self, chunk: &[usize], learner: &mut Learner<Vec<f32>>) -> Result<f64> {
        let batch: Arc<[usize]> = chunk.into();
        if self.lanes > 1 {
            *self.slot.lock().map_err(|_| failed())? = batch.clone();
            self.finished.store(0, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        let mut losses = [0.0f64; SHARDS];
        let mut error = None;
        for k in (0..SHARDS).step_by(self.lanes) {
            match self.run_shard(&batch, k) {
                Ok(l) => losses[k] = l,
                Err(e) => error = error.or(Some(e)),
            }
        }
        let theirs = (0..SHARDS).filter(|k| k % self.lanes != 0).count();
        let mut spins = 0u32;
        while self.finished.load(Ordering::Acquire) < theirs {
            spin(&mut spins);
        }
        for (k, r) in self.results.iter().enumerate() {
            match r.lock().map_err(|_| failed())?.take() {
                Some(Ok(l)) => losses[k] = l,
                Some(Err(e)) => error = error.or(Some(e)),
                None => {}
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let mut head = self.head.write().map_err(|_| failed())?;
        for l in &self.learners {
            learner.merge(&mut *l.lock().map_err(|_| failed())?)?;
        }
        learner.apply(&mut *head)?;
        Ok(losses.iter().sum::<f64>())
    }
}
