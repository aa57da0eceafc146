//! The learner: the gradient, the optimizer state and the scratch of one head in a flat
//! buffer; forward and backward passes, steps and mini-batches.

use super::loss::loss_and_dlogits;
use super::optimizer::update;
use super::{Config, Optimizer};
use crate::error::{Error, Result, check_vector};
use crate::head::{Dims, Head, Storage};
use crate::math;
use crate::rng::Rng;

/// Offsets of the regions of a learner's state buffer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    params: usize,
    opt: usize,
    cap: usize,
    hidden: usize,
}

impl Layout {
    const fn new(dims: Dims, optimizer: &Optimizer) -> Self {
        Layout {
            params: dims.param_len(),
            opt: dims.param_len() * optimizer.state_per_param(),
            cap: dims.capacity,
            hidden: dims.hidden,
        }
    }
    const fn len(&self) -> usize {
        self.params + self.opt + 3 * self.cap + 4 * self.hidden
    }
}

/// Scratch views into the state buffer for one forward/backward pass.
struct Parts<'a> {
    grads: &'a mut [f32],
    opt: &'a mut [f32],
    class_weights: &'a mut [f32],
    z1: &'a mut [f32],
    act: &'a mut [f32],
    mask: &'a mut [f32],
    dact: &'a mut [f32],
    logits: &'a mut [f32],
    dlogits: &'a mut [f32],
}

/// The learning state of one head: gradient accumulator, optimizer state, class weights,
/// step count and scratch, in caller-provided storage.
#[derive(Debug, Clone)]
pub struct Learner<S> {
    cfg: Config,
    dims: Dims,
    layout: Layout,
    state: S,
    step: u32,
    pending: u32,
    rng: Rng,
}

impl<S> Learner<S> {
    /// Storage values a learner for `dims` with `optimizer` needs.
    pub const fn state_len(dims: Dims, optimizer: &Optimizer) -> usize {
        Layout::new(dims, optimizer).len()
    }
}

impl<S: Storage> Learner<S> {
    /// A learner for heads of `dims`, learning by `cfg`, over `storage` (at least
    /// [`Learner::state_len`] values).
    pub fn new(dims: Dims, cfg: Config, storage: S) -> Result<Self> {
        dims.check()?;
        cfg.validate()?;
        let layout = Layout::new(dims, &cfg.optimizer);
        let len = storage.as_ref().len();
        if len < layout.len() {
            return Err(Error::Capacity {
                what: "learner state",
                requested: layout.len(),
                capacity: len,
            });
        }
        let mut l = Learner {
            cfg,
            dims,
            layout,
            state: storage,
            step: 0,
            pending: 0,
            rng: Rng::new(cfg.seed),
        };
        l.reset();
        Ok(l)
    }

    /// Clears the gradient and optimizer state and the step count; class weights back to 1.
    pub fn reset(&mut self) {
        let n = self.layout.len();
        let s = &mut self.state.as_mut()[..n];
        s.fill(0.0);
        self.parts().class_weights.fill(1.0);
        self.step = 0;
        self.pending = 0;
        self.rng = Rng::new(self.cfg.seed);
    }

    /// The learning rule.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Changes the rule's hyperparameters, keeping optimizer state. The optimizer's kind
    /// must not change (its state would mean something else).
    pub fn set_config(&mut self, cfg: Config) -> Result<()> {
        cfg.validate()?;
        if core::mem::discriminant(&cfg.optimizer) != core::mem::discriminant(&self.cfg.optimizer)
            || cfg.optimizer.state_per_param() != self.cfg.optimizer.state_per_param()
        {
            return Err(Error::Config {
                what: "set_config cannot change the optimizer kind",
            });
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Makes this learner a copy of `other` (same dimensions and optimizer kind) without
    /// allocating: rule, optimizer state, step count, generator. [`Error::Config`] when
    /// the two cannot be copied into each other.
    pub fn copy_from<T: Storage>(&mut self, other: &Learner<T>) -> Result<()> {
        if self.dims != other.dims || self.layout.len() != other.layout.len() {
            return Err(Error::Config {
                what: "copy_from: the learners' dimensions or optimizers differ",
            });
        }
        let n = self.layout.len();
        self.state.as_mut()[..n].copy_from_slice(&other.state.as_ref()[..n]);
        self.cfg = other.cfg;
        self.layout = other.layout;
        self.step = other.step;
        self.pending = other.pending;
        self.rng = other.rng.clone();
        Ok(())
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u32 {
        self.step
    }

    /// The learning rate the next step will use.
    pub fn lr(&self) -> f32 {
        self.cfg.lr * self.cfg.schedule.factor(self.step)
    }

    /// The accumulated (not yet applied) gradient, summed over pending samples.
    pub fn grads(&self) -> &[f32] {
        &self.state.as_ref()[..self.layout.params]
    }

    /// Optimizer state (momentum, or Adam's m then v), for persistence.
    pub fn opt_state(&self) -> &[f32] {
        let l = self.layout;
        &self.state.as_ref()[l.params..l.params + l.opt]
    }

    /// Dimensions this learner was made for.
    pub fn dims(&self) -> Dims {
        self.dims
    }

    pub(crate) fn restore(&mut self, step: u32, rng: u64, opt_state: impl Iterator<Item = f32>) {
        self.reset();
        self.step = step;
        self.rng = Rng::new(rng);
        let l = self.layout;
        for (d, s) in self.state.as_mut()[l.params..l.params + l.opt]
            .iter_mut()
            .zip(opt_state)
        {
            *d = s;
        }
    }

    pub(crate) fn rng_state(&self) -> u64 {
        self.rng.state()
    }

    /// Per-class loss weights (e.g. inverse frequencies); classes beyond `weights.len()`
    /// keep theirs.
    pub fn set_class_weights(&mut self, weights: &[f32]) -> Result<()> {
        if weights.len() > self.dims.capacity {
            return Err(Error::Capacity {
                what: "class weights",
                requested: weights.len(),
                capacity: self.dims.capacity,
            });
        }
        if !weights.iter().all(|w| *w >= 0.0 && w.is_finite()) {
            return Err(Error::Config {
                what: "class weights must be >= 0 and finite",
            });
        }
        self.parts().class_weights[..weights.len()].copy_from_slice(weights);
        Ok(())
    }

    fn parts(&mut self) -> Parts<'_> {
        let l = self.layout;
        let s = &mut self.state.as_mut()[..l.len()];
        let (grads, s) = s.split_at_mut(l.params);
        let (opt, s) = s.split_at_mut(l.opt);
        let (class_weights, s) = s.split_at_mut(l.cap);
        let (logits, s) = s.split_at_mut(l.cap);
        let (dlogits, s) = s.split_at_mut(l.cap);
        let (z1, s) = s.split_at_mut(l.hidden);
        let (act, s) = s.split_at_mut(l.hidden);
        let (mask, dact) = s.split_at_mut(l.hidden);
        Parts {
            grads,
            opt,
            class_weights,
            z1,
            act,
            mask,
            dact,
            logits,
            dlogits,
        }
    }

    fn check<H: Storage>(&self, head: &Head<H>, x: &[f32], y: usize) -> Result<()> {
        if head.dims() != self.dims {
            return Err(Error::Config {
                what: "head and learner dimensions differ",
            });
        }
        check_vector("embedding", x, self.dims.input)?;
        if y >= head.classes() {
            return Err(Error::UnknownClass {
                class: y,
                classes: head.classes(),
            });
        }
        Ok(())
    }

    /// The loss of one sample (no dropout, no gradient, nothing updated).
    pub fn loss<H: Storage>(&mut self, head: &Head<H>, x: &[f32], y: usize) -> Result<f32> {
        self.check(head, x, y)?;
        let (cfg, c) = (self.cfg, head.classes());
        let mut p = self.parts();
        forward(head, x, false, 0.0, &mut Rng::new(0), &mut p);
        Ok(loss_and_dlogits(
            &cfg.loss,
            &mut p.logits[..c],
            &mut p.dlogits[..c],
            y,
            p.class_weights[y],
        ))
    }

    /// Adds the gradient of one sample's loss to the accumulator and returns the loss.
    /// Call [`Learner::apply`] to take the step.
    pub fn accumulate<H: Storage>(&mut self, head: &Head<H>, x: &[f32], y: usize) -> Result<f32> {
        self.check(head, x, y)?;
        let (cfg, dims, c) = (self.cfg, self.dims, head.classes());
        let mut rng = self.rng.clone();
        let mut p = self.parts();
        forward(head, x, true, cfg.dropout, &mut rng, &mut p);
        let loss = loss_and_dlogits(
            &cfg.loss,
            &mut p.logits[..c],
            &mut p.dlogits[..c],
            y,
            p.class_weights[y],
        );
        backward(dims, head.params(), x, c, &mut p);
        self.rng = rng;
        self.pending += 1;
        Ok(loss)
    }

    /// Takes one optimizer step with the mean of the accumulated gradients, then clears
    /// them. Does nothing when nothing is pending.
    pub fn apply<H: Storage>(&mut self, head: &mut Head<H>) -> Result<()> {
        if head.dims() != self.dims {
            return Err(Error::Config {
                what: "head and learner dimensions differ",
            });
        }
        if self.pending == 0 {
            return Ok(());
        }
        let cfg = self.cfg;
        let blocks = self.dims.active_blocks(head.classes());
        let step = self.step;
        let pending = self.pending;
        let p = self.parts();
        let mut scale = 1.0 / pending as f32;
        if cfg.clip_norm > 0.0 {
            let sq: f32 = blocks
                .iter()
                .map(|b| math::sq_norm(&p.grads[b.range.clone()]))
                .sum();
            let n = math::sqrt(sq) * scale;
            if n > cfg.clip_norm {
                scale *= cfg.clip_norm / n;
            }
        }
        let lr = cfg.lr * cfg.schedule.factor(step);
        let params = head.params_mut();
        let np = params.len();
        for b in &blocks {
            let wd = if b.decay { cfg.weight_decay } else { 0.0 };
            let r = b.range.clone();
            update(
                &cfg.optimizer,
                step,
                lr,
                wd,
                scale,
                &mut params[r.clone()],
                &p.grads[r.clone()],
                p.opt,
                np,
                r.clone(),
            );
            p.grads[r].fill(0.0);
        }
        self.step = step.saturating_add(1);
        self.pending = 0;
        Ok(())
    }

    /// One learning step on one sample; returns its loss.
    pub fn step<H: Storage>(&mut self, head: &mut Head<H>, x: &[f32], y: usize) -> Result<f32> {
        if self.dims.hidden == 0 && self.pending == 0 {
            return self.step_linear(head, x, y);
        }
        let loss = self.accumulate(head, x, y)?;
        self.apply(head)?;
        Ok(loss)
    }

    /// A linear head's single-sample step. Its gradient is rank one (row c is
    /// `dlogit_c · x`), so the optimizer reads `x` directly instead of a materialized
    /// gradient: the same arithmetic as `accumulate` + `apply`, two fewer passes over
    /// memory.
    fn step_linear<H: Storage>(&mut self, head: &mut Head<H>, x: &[f32], y: usize) -> Result<f32> {
        self.check(head, x, y)?;
        let (cfg, dims, c, step) = (self.cfg, self.dims, head.classes(), self.step);
        let mut p = self.parts();
        forward(head, x, false, 0.0, &mut Rng::new(0), &mut p);
        let loss = loss_and_dlogits(
            &cfg.loss,
            &mut p.logits[..c],
            &mut p.dlogits[..c],
            y,
            p.class_weights[y],
        );
        let mut clip = 1.0f32;
        if cfg.clip_norm > 0.0 {
            // ‖dlogits ⊗ [x, 1]‖ without forming it; the general path sums the same
            // squares in another order, so clipped steps may differ in the last bit.
            let n = math::sqrt(math::sq_norm(&p.dlogits[..c]) * (math::sq_norm(x) + 1.0));
            if n > cfg.clip_norm {
                clip = cfg.clip_norm / n;
            }
        }
        let lr = cfg.lr * cfg.schedule.factor(step);
        let (d, cap) = (dims.input, dims.capacity);
        let np = dims.param_len();
        let params = head.params_mut();
        for k in 0..c {
            let r = k * d..(k + 1) * d;
            let g = p.dlogits[k] * clip;
            update(
                &cfg.optimizer,
                step,
                lr,
                cfg.weight_decay,
                g,
                &mut params[r.clone()],
                x,
                p.opt,
                np,
                r,
            );
        }
        let r = cap * d..cap * d + c;
        update(
            &cfg.optimizer,
            step,
            lr,
            0.0,
            clip,
            &mut params[r.clone()],
            &p.dlogits[..c],
            p.opt,
            np,
            r,
        );
        self.step = step.saturating_add(1);
        Ok(loss)
    }

    /// One learning step on a mini-batch; returns the mean loss. On an invalid sample the
    /// head is left unchanged, the partial batch is discarded, and the error returned.
    pub fn step_batch<'x, H: Storage>(
        &mut self,
        head: &mut Head<H>,
        batch: impl IntoIterator<Item = (&'x [f32], usize)>,
    ) -> Result<f32> {
        let mut total = 0.0f32;
        let mut n = 0u32;
        for (x, y) in batch {
            match self.accumulate(head, x, y) {
                Ok(l) => total += l,
                Err(e) => {
                    self.discard();
                    return Err(e);
                }
            }
            n += 1;
        }
        self.apply(head)?;
        Ok(if n > 0 { total / n as f32 } else { 0.0 })
    }

    /// Adds the gradient `other` has accumulated, and its sample count, to this
    /// learner's, and clears `other`'s: data parallelism over a mini-batch, where shards
    /// of the batch are accumulated by separate learners (on separate threads, over the
    /// same head) and merged in a fixed order before [`Learner::apply`]. Errors, changing
    /// nothing, when the dimensions differ.
    pub fn merge<T: Storage>(&mut self, other: &mut Learner<T>) -> Result<()> {
        if other.dims != self.dims {
            return Err(Error::Config {
                what: "merged learners' dimensions differ",
            });
        }
        let n = self.layout.params;
        let theirs = &mut other.state.as_mut()[..n];
        for (g, o) in self.state.as_mut()[..n].iter_mut().zip(theirs.iter_mut()) {
            *g += *o;
            *o = 0.0;
        }
        self.pending += other.pending;
        other.pending = 0;
        Ok(())
    }

    /// Drops the accumulated gradient without stepping.
    pub fn discard(&mut self) {
        let n = self.layout.params;
        self.state.as_mut()[..n].fill(0.0);
        self.pending = 0;
    }
}

#[cfg(feature = "std")]
impl Learner<std::vec::Vec<f32>> {
    /// A learner over a freshly allocated `Vec` (host and Linux device).
    pub fn alloc(dims: Dims, cfg: Config) -> Result<Self> {
        dims.check()?;
        Learner::new(
            dims,
            cfg,
            std::vec![0.0; Learner::<()>::state_len(dims, &cfg.optimizer)],
        )
    }
}

/// Forward pass into `p.logits` (and, for an MLP, `p.z1`, `p.mask`, `p.act`).
fn forward<H: Storage>(
    head: &Head<H>,
    x: &[f32],
    train: bool,
    dropout: f32,
    rng: &mut Rng,
    p: &mut Parts<'_>,
) {
    let Dims {
        input: d,
        hidden: h,
        capacity: cap,
    } = head.dims();
    let c = head.classes();
    let w = head.params();
    if h == 0 {
        for k in 0..c {
            p.logits[k] = math::dot(&w[k * d..(k + 1) * d], x) + w[cap * d + k];
        }
        return;
    }
    let keep = 1.0 - dropout;
    for j in 0..h {
        p.z1[j] = math::dot(&w[j * d..(j + 1) * d], x) + w[h * d + j];
        p.mask[j] = if train && dropout > 0.0 {
            if rng.unit() < keep { 1.0 / keep } else { 0.0 }
        } else {
            1.0
        };
        p.act[j] = p.z1[j].max(0.0) * p.mask[j];
    }
    let o = h * (d + 1);
    for k in 0..c {
        p.logits[k] = math::dot(&w[o + k * h..o + (k + 1) * h], p.act) + w[o + cap * h + k];
    }
}

/// Adds the gradient of one sample to `p.grads`, given `p.dlogits`.
fn backward(dims: Dims, w: &[f32], x: &[f32], c: usize, p: &mut Parts<'_>) {
    let Dims {
        input: d,
        hidden: h,
        capacity: cap,
    } = dims;
    if h == 0 {
        for k in 0..c {
            let g = p.dlogits[k];
            math::axpy(g, x, &mut p.grads[k * d..(k + 1) * d]);
            p.grads[cap * d + k] += g;
        }
        return;
    }
    let o = h * (d + 1);
    p.dact.fill(0.0);
    for k in 0..c {
        let g = p.dlogits[k];
        math::axpy(g, p.act, &mut p.grads[o + k * h..o + (k + 1) * h]);
        p.grads[o + cap * h + k] += g;
        math::axpy(g, &w[o + k * h..o + (k + 1) * h], p.dact);
    }
    for j in 0..h {
        let g = if p.z1[j] > 0.0 {
            p.dact[j] * p.mask[j]
        } else {
            0.0
        };
        if g != 0.0 {
            math::axpy(g, x, &mut p.grads[j * d..(j + 1) * d]);
        }
        p.grads[h * d + j] += g;
    }
}
