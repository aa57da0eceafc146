//! The classification head: a linear layer (D→C) or a one-hidden-layer MLP (D→H→C,
//! ReLU) over the backbone's embedding, in storage the caller provides.
//!
//! Dimensions are chosen at run time; the number of classes can grow up to a capacity
//! fixed at construction, so a device can learn a class it has never seen without
//! reallocating. Parameters live in one flat `f32` buffer (any `AsRef<[f32]> +
//! AsMut<[f32]>`: a static array on a microcontroller, a `Vec` on Linux):
//!
//! | kind | layout (row-major, class-major) |
//! | --- | --- |
//! | linear | `W[capacity][input]`, `b[capacity]` |
//! | MLP | `W1[hidden][input]`, `b1[hidden]`, `W2[capacity][hidden]`, `b2[capacity]` |
//!
//! ```
//! use edgetune_core::head::{Dims, Head};
//! const DIMS: Dims = Dims::linear(4, 3);
//! let mut head = Head::new(DIMS, 2, [0.0f32; DIMS.param_len()]).unwrap();
//! head.params_mut()[0] = 1.0; // class 0 looks at feature 0
//! let mut probs = [0.0; 3];
//! let p = head.predict(&[2.0, 0.0, 0.0, 0.0], &mut probs).unwrap();
//! assert_eq!(p.class, 0);
//! assert!(p.confidence > 0.8 && p.margin > 0.7);
//! ```

use core::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, check_vector};
use crate::math;
use crate::rng::Rng;

/// Flat `f32` storage for parameters, optimizer state and scratch: a fixed array, a
/// `&mut [f32]` into a static, or a `Vec<f32>`.
pub trait Storage: AsRef<[f32]> + AsMut<[f32]> {}
impl<T: AsRef<[f32]> + AsMut<[f32]> + ?Sized> Storage for T {}

/// Which kind of head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HeadKind {
    /// One affine layer from the embedding to the logits.
    Linear,
    /// Affine → ReLU → affine, with this many hidden units.
    Mlp {
        /// Hidden units.
        hidden: usize,
    },
}

/// A head's dimensions. `capacity` is the most classes the head can ever hold; the
/// storage is sized for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dims {
    /// Embedding size D.
    pub input: usize,
    /// Hidden units H; 0 for a linear head.
    pub hidden: usize,
    /// Most classes the head can hold.
    pub capacity: usize,
}

/// A parameter block and whether weight decay applies to it (weights yes, biases no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub range: Range<usize>,
    pub decay: bool,
}

impl Dims {
    /// A linear head D→C.
    pub const fn linear(input: usize, capacity: usize) -> Self {
        Dims {
            input,
            hidden: 0,
            capacity,
        }
    }

    /// An MLP head D→H→C.
    pub const fn mlp(input: usize, hidden: usize, capacity: usize) -> Self {
        Dims {
            input,
            hidden,
            capacity,
        }
    }

    /// The head's kind.
    pub const fn kind(&self) -> HeadKind {
        if self.hidden == 0 {
            HeadKind::Linear
        } else {
            HeadKind::Mlp {
                hidden: self.hidden,
            }
        }
    }

    /// Number of `f32` parameters (the storage a [`Head`] needs), for the full capacity.
    pub const fn param_len(&self) -> usize {
        if self.hidden == 0 {
            self.capacity * (self.input + 1)
        } else {
            self.hidden * (self.input + 1) + self.capacity * (self.hidden + 1)
        }
    }

    /// Width of the layer that feeds the logits: H for an MLP, D for a linear head.
    pub const fn feature_width(&self) -> usize {
        if self.hidden == 0 {
            self.input
        } else {
            self.hidden
        }
    }

    /// Offset of the output layer's weights (`W` or `W2`).
    const fn out_offset(&self) -> usize {
        if self.hidden == 0 {
            0
        } else {
            self.hidden * (self.input + 1)
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.input == 0 {
            return Err(Error::Config {
                what: "input (embedding) size must be at least 1",
            });
        }
        if self.capacity < 2 {
            return Err(Error::Config {
                what: "class capacity must be at least 2",
            });
        }
        // Keep every index and the persisted u32 fields in range on any target.
        let big = |v: usize| v > (u32::MAX as usize) / 4;
        if big(self.input) || big(self.hidden) || big(self.capacity) {
            return Err(Error::Config {
                what: "dimensions must be below 2^30",
            });
        }
        let w = self.feature_width();
        let ok = self.capacity.checked_mul(w + 1).and_then(|o| {
            self.hidden
                .checked_mul(self.input + 1)
                .and_then(|h| h.checked_add(o))
        });
        if ok.is_none() {
            return Err(Error::Config {
                what: "dimensions overflow the address space",
            });
        }
        Ok(())
    }

    /// The blocks a learning step touches when `classes` classes are active: all of the
    /// hidden layer, and the output rows of the active classes only.
    pub(crate) fn active_blocks(&self, classes: usize) -> heapless::Vec<Block, 4> {
        let mut v = heapless::Vec::new();
        let (d, h, cap) = (self.input, self.hidden, self.capacity);
        let mut push = |range: Range<usize>, decay| {
            let _ = v.push(Block { range, decay });
        };
        if h > 0 {
            push(0..h * d, true);
            push(h * d..h * (d + 1), false);
        }
        let o = self.out_offset();
        let w = self.feature_width();
        push(o..o + classes * w, true);
        push(o + cap * w..o + cap * w + classes, false);
        v
    }
}

/// The result of one prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Prediction {
    /// The most probable class.
    pub class: usize,
    /// Its probability.
    pub confidence: f32,
    /// Top-1 minus top-2 probability: near 0 when the head hesitates between two classes.
    pub margin: f32,
    /// Entropy of the probabilities divided by ln(classes): 0 certain, 1 uniform.
    pub entropy: f32,
}

impl Prediction {
    /// Fills from softmax probabilities (at least one class).
    pub fn from_probs(probs: &[f32]) -> Self {
        let mut h = 0.0f32;
        for &p in probs {
            if p > 0.0 {
                h -= p * libm::logf(p);
            }
        }
        Self::from_softmax(probs, h)
    }

    /// From probabilities and their entropy in nats.
    fn from_softmax(probs: &[f32], entropy_nats: f32) -> Self {
        let (class, confidence) = math::argmax(probs).unwrap_or((0, 0.0));
        let second = probs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != class)
            .map(|(_, &p)| p)
            .fold(0.0f32, f32::max);
        let n = probs.len();
        let entropy = if n > 1 {
            entropy_nats / libm::logf(n as f32)
        } else {
            0.0
        };
        Prediction {
            class,
            confidence,
            margin: confidence - second,
            entropy: entropy.clamp(0.0, 1.0),
        }
    }

    /// Whether to ask the user for a label (active learning): the margin is below
    /// `min_margin`.
    pub fn is_uncertain(&self, min_margin: f32) -> bool {
        self.margin < min_margin
    }
}

/// The `K` most probable classes, most probable first (ties: lower index first).
pub fn top_k<const K: usize>(probs: &[f32]) -> heapless::Vec<(usize, f32), K> {
    let mut top: heapless::Vec<(usize, f32), K> = heapless::Vec::new();
    for (i, &p) in probs.iter().enumerate() {
        if p.is_nan() {
            continue;
        }
        let pos = top.iter().position(|&(_, q)| p > q).unwrap_or(top.len());
        if pos < K {
            if top.is_full() {
                top.pop();
            }
            let _ = top.insert(pos, (i, p));
        }
    }
    top
}

/// A classification head over caller-provided parameter storage.
#[derive(Debug, Clone)]
pub struct Head<S> {
    dims: Dims,
    classes: usize,
    params: S,
}

impl<S: Storage> Head<S> {
    /// A head with `classes` active classes over `storage` (at least
    /// [`Dims::param_len`] values; extra values are left alone). Parameters are
    /// initialized as by [`Head::init`] with seed 0.
    pub fn new(dims: Dims, classes: usize, storage: S) -> Result<Self> {
        dims.check()?;
        if classes > dims.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: classes,
                capacity: dims.capacity,
            });
        }
        let len = storage.as_ref().len();
        if len < dims.param_len() {
            return Err(Error::Capacity {
                what: "parameters",
                requested: dims.param_len(),
                capacity: len,
            });
        }
        let mut head = Head {
            dims,
            classes,
            params: storage,
        };
        head.init(0);
        Ok(head)
    }

    /// Re-initializes every parameter: a linear head starts at zero (its loss is convex);
    /// an MLP's hidden layer gets He-uniform weights and its output layer uniform weights
    /// in ±1/√H (PyTorch's defaults), from a deterministic generator seeded with `seed`.
    pub fn init(&mut self, seed: u64) {
        let dims = self.dims;
        let p = &mut self.params.as_mut()[..dims.param_len()];
        p.fill(0.0);
        if dims.hidden > 0 {
            let mut rng = Rng::new(seed);
            let (d, h) = (dims.input, dims.hidden);
            let b1 = math::sqrt(6.0 / d as f32);
            for w in &mut p[..h * d] {
                *w = rng.uniform(-b1, b1);
            }
            let b2 = 1.0 / math::sqrt(h as f32);
            let o = dims.out_offset();
            for w in &mut p[o..o + dims.capacity * h] {
                *w = rng.uniform(-b2, b2);
            }
        }
    }

    /// Dimensions.
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// Makes this head a copy of `other` (same dimensions) without allocating: a
    /// snapshot to roll an update back to. [`Error::Config`] when the dimensions differ.
    pub fn copy_from<T: Storage>(&mut self, other: &Head<T>) -> Result<()> {
        if self.dims != other.dims {
            return Err(Error::Config {
                what: "copy_from: the heads' dimensions differ",
            });
        }
        let n = self.dims.param_len();
        self.params.as_mut()[..n].copy_from_slice(&other.params.as_ref()[..n]);
        self.classes = other.classes;
        Ok(())
    }

    /// Number of active classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All parameters (full capacity), in the layout of the module docs.
    pub fn params(&self) -> &[f32] {
        &self.params.as_ref()[..self.dims.param_len()]
    }

    /// All parameters, mutable.
    pub fn params_mut(&mut self) -> &mut [f32] {
        let n = self.dims.param_len();
        &mut self.params.as_mut()[..n]
    }

    /// The storage back, e.g. to reuse a static buffer.
    pub fn into_storage(self) -> S {
        self.params
    }

    pub(crate) fn set_classes(&mut self, classes: usize) {
        self.classes = classes;
    }

    /// Output-layer weight row of `class` (length [`Dims::feature_width`]).
    pub fn class_weights(&self, class: usize) -> &[f32] {
        let (o, w) = (self.dims.out_offset(), self.dims.feature_width());
        &self.params()[o + class * w..o + (class + 1) * w]
    }

    /// The summed row norms and biases of every class but `class`, and their number:
    /// what imprinting scales a new row and sets its bias from.
    fn other_rows(&self, class: usize) -> (f32, f32, usize) {
        let (o, w, cap) = (
            self.dims.out_offset(),
            self.dims.feature_width(),
            self.dims.capacity,
        );
        let (mut norms, mut biases, mut count) = (0.0f32, 0.0f32, 0usize);
        for c in (0..self.classes).filter(|&c| c != class) {
            norms += math::norm(self.class_weights(c));
            biases += self.params()[o + cap * w + c];
            count += 1;
        }
        (norms, biases, count)
    }

    fn check_input(&self, x: &[f32]) -> Result<()> {
        check_vector("embedding", x, self.dims.input)?;
        Ok(())
    }

    fn check_out(&self, out: &[f32], what: &'static str) -> Result<()> {
        if out.len() < self.classes {
            return Err(Error::Length {
                what,
                expected: self.classes,
                found: out.len(),
            });
        }
        Ok(())
    }

    /// Logits of the active classes into `out[..classes]`.
    pub fn logits(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_input(x)?;
        self.check_out(out, "logits buffer")?;
        self.logits_unchecked(x, &mut out[..self.classes]);
        Ok(())
    }

    /// Softmax probabilities into `probs[..classes]`, and the prediction.
    pub fn predict(&self, x: &[f32], probs: &mut [f32]) -> Result<Prediction> {
        if self.classes == 0 {
            return Err(Error::UnknownClass {
                class: 0,
                classes: 0,
            });
        }
        self.logits(x, probs)?;
        let probs = &mut probs[..self.classes];
        let (_, entropy) = math::softmax_entropy_in_place(probs);
        Ok(Prediction::from_softmax(probs, entropy))
    }

    fn logits_unchecked(&self, x: &[f32], out: &mut [f32]) {
        let Dims {
            input: d,
            hidden: h,
            capacity: cap,
        } = self.dims;
        let p = self.params();
        if h == 0 {
            let (w, b) = (&p[..cap * d], &p[cap * d..]);
            for (c, o) in out.iter_mut().enumerate() {
                *o = math::dot(&w[c * d..(c + 1) * d], x) + b[c];
            }
        } else {
            // Hidden units are computed one at a time and folded into the logits, so a
            // prediction needs no scratch memory.
            let (w1, rest) = p.split_at(h * d);
            let (b1, rest) = rest.split_at(h);
            let (w2, b2) = rest.split_at(cap * h);
            out.copy_from_slice(&b2[..out.len()]);
            for j in 0..h {
                let a = math::dot(&w1[j * d..(j + 1) * d], x) + b1[j];
                if a > 0.0 {
                    for (c, o) in out.iter_mut().enumerate() {
                        *o += w2[c * h + j] * a;
                    }
                }
            }
        }
    }

    /// Hidden activations (MLP) into `out[..hidden]`; for a linear head, copies `x`.
    /// Used for imprinting in the space the output layer sees.
    pub fn features(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_input(x)?;
        let w = self.dims.feature_width();
        if out.len() < w {
            return Err(Error::Length {
                what: "feature buffer",
                expected: w,
                found: out.len(),
            });
        }
        let Dims {
            input: d,
            hidden: h,
            ..
        } = self.dims;
        if h == 0 {
            out[..d].copy_from_slice(x);
        } else {
            let p = self.params();
            for j in 0..h {
                out[j] = (math::dot(&p[j * d..(j + 1) * d], x) + p[h * d + j]).max(0.0);
            }
        }
        Ok(())
    }

    /// Adds a class (weights zero, so it starts with the average logit) and returns its
    /// index. Follow with [`Head::imprint`] to give it a useful start.
    pub fn add_class(&mut self) -> Result<usize> {
        if self.classes >= self.dims.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: self.classes + 1,
                capacity: self.dims.capacity,
            });
        }
        let c = self.classes;
        self.zero_class(c);
        self.classes += 1;
        Ok(c)
    }

    fn zero_class(&mut self, c: usize) {
        let (o, w, cap) = (
            self.dims.out_offset(),
            self.dims.feature_width(),
            self.dims.capacity,
        );
        let p = self.params_mut();
        p[o + c * w..o + (c + 1) * w].fill(0.0);
        p[o + cap * w + c] = 0.0;
    }

    /// Weight imprinting (Qi et al. 2018): sets `class`'s output weights to `scale` × the
    /// unit vector of the class's features, computed from `embedding` (an embedding of
    /// the class, or the mean of several, e.g. from [`crate::classes::ClassMeans`]): the
    /// embedding itself for a linear head, its hidden activations for an MLP. The bias
    /// becomes the mean of the other classes' biases. With `scale` `None`, the mean norm
    /// of the other classes' rows is used (or 1 when there are none), so the new class
    /// competes on equal terms. Needs no scratch memory: the features are computed in the
    /// class's own row.
    pub fn imprint(&mut self, class: usize, embedding: &[f32], scale: Option<f32>) -> Result<()> {
        if class >= self.classes {
            return Err(Error::UnknownClass {
                class,
                classes: self.classes,
            });
        }
        check_vector("imprint embedding", embedding, self.dims.input)?;
        let Dims {
            input: d,
            hidden: h,
            capacity: cap,
        } = self.dims;
        let (o, w) = (self.dims.out_offset(), self.dims.feature_width());
        let (norms, biases, count) = self.other_rows(class);
        let scale = match scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(_) => {
                return Err(Error::Config {
                    what: "imprint scale must be positive and finite",
                });
            }
            None if count > 0 && norms > 0.0 => norms / count as f32,
            None => 1.0,
        };
        let bias = if count > 0 {
            biases / count as f32
        } else {
            0.0
        };
        let p = self.params_mut();
        let (hidden_layer, out) = p.split_at_mut(o);
        let (w1, b1) = hidden_layer.split_at(h * d);
        let feature = |j: usize| feature(w1, b1, d, j, embedding);
        // Norm first, so that an error leaves the row as it was.
        let n = math::sqrt(
            (0..w)
                .map(|j| {
                    let f = feature(j);
                    f * f
                })
                .sum::<f32>(),
        );
        if n == 0.0 || !n.is_finite() {
            return Err(Error::Config {
                what: "imprint features are all zero (or overflow)",
            });
        }
        let k = scale / n;
        let (rows, out_bias) = out.split_at_mut(cap * w);
        for (j, r) in rows[class * w..(class + 1) * w].iter_mut().enumerate() {
            *r = feature(j) * k;
        }
        out_bias[class] = bias;
        Ok(())
    }

    /// Imprinting relative to earlier samples: like [`Head::imprint`], but the class's
    /// weights follow the *difference* between the features of `embedding` and the mean
    /// features of `others` (samples of the other classes, e.g. the replay buffer), and
    /// the bias is set so that at that mean the new class scores the other classes'
    /// average. Backbone embeddings share a large common part (ReLU outputs are all
    /// positive), so a plain imprint, which follows the embedding itself, makes the new
    /// class win on almost every input; centering removes the common part. With no
    /// `others` this is [`Head::imprint`]. `embedding` is a raw embedding (not a mean of
    /// unit vectors), on the same scale as `others`. Needs no scratch memory; time
    /// O(features × others × (1, or `input` for an MLP)).
    pub fn imprint_centered<'a, I>(
        &mut self,
        class: usize,
        embedding: &[f32],
        others: I,
        scale: Option<f32>,
    ) -> Result<()>
    where
        I: Iterator<Item = &'a [f32]> + Clone,
    {
        let n = others.clone().count();
        if n == 0 {
            return self.imprint(class, embedding, scale);
        }
        if class >= self.classes {
            return Err(Error::UnknownClass {
                class,
                classes: self.classes,
            });
        }
        check_vector("imprint embedding", embedding, self.dims.input)?;
        for x in others.clone() {
            check_vector("imprint reference sample", x, self.dims.input)?;
        }
        if let Some(s) = scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(Error::Config {
                what: "imprint scale must be positive and finite",
            });
        }
        let Dims {
            input: d,
            hidden: h,
            capacity: cap,
        } = self.dims;
        let (o, w) = (self.dims.out_offset(), self.dims.feature_width());
        let inv_n = 1.0 / n as f32;
        // Pass 1, reading only: the norm of the centered features, the other classes'
        // summed weights against the mean features, and the centered features against it.
        let (mut norm2, mut others_at_mean, mut centered_at_mean) = (0.0f32, 0.0f32, 0.0f32);
        let (norms, biases, count) = self.other_rows(class);
        {
            let p = self.params();
            let (w1, rest) = p.split_at(h * d);
            let b1 = &rest[..h];
            let feature = |j: usize, x: &[f32]| feature(w1, b1, d, j, x);
            let rows = &p[o..o + cap * w];
            for j in 0..w {
                let m = others.clone().map(|x| feature(j, x)).sum::<f32>() * inv_n;
                let r = feature(j, embedding) - m;
                norm2 += r * r;
                centered_at_mean += r * m;
                let column: f32 = (0..self.classes)
                    .filter(|&c| c != class)
                    .map(|c| rows[c * w + j])
                    .sum();
                others_at_mean += column * m;
            }
        }
        let norm = math::sqrt(norm2);
        if norm == 0.0 || !norm.is_finite() {
            return Err(Error::Config {
                what: "imprint features equal the reference mean (or overflow)",
            });
        }
        // Nothing fails from here on. Pass 2: the centered features into the row.
        {
            let p = self.params_mut();
            let (hidden_layer, out) = p.split_at_mut(o);
            let (w1, b1) = hidden_layer.split_at(h * d);
            let feature = |j: usize, x: &[f32]| feature(w1, b1, d, j, x);
            let (rows, out_bias) = out.split_at_mut(cap * w);
            for (j, r) in rows[class * w..(class + 1) * w].iter_mut().enumerate() {
                let m = others.clone().map(|x| feature(j, x)).sum::<f32>() * inv_n;
                *r = feature(j, embedding) - m;
            }
            out_bias[class] = 0.0;
        }
        // The scale: given, else one that gives the new class's logits the same spread
        // over `others` as the other classes' (up to the first SPREAD_CLASSES of them)
        // have, else the other rows' mean norm.
        let k = match scale {
            Some(s) => s / norm,
            None => {
                let spread = self.spread(class, others);
                match spread {
                    Some((others_var, new_var)) if others_var > 0.0 && new_var > 0.0 => {
                        math::sqrt(others_var / new_var)
                    }
                    _ if count > 0 && norms > 0.0 => norms / count as f32 / norm,
                    _ => 1.0 / norm,
                }
            }
        };
        let bias = if count > 0 {
            (others_at_mean + biases) / count as f32 - k * centered_at_mean
        } else {
            -k * centered_at_mean
        };
        let p = self.params_mut();
        for r in &mut p[o + class * w..o + (class + 1) * w] {
            *r *= k;
        }
        p[o + cap * w + class] = bias;
        Ok(())
    }

    /// The mean variance over `others` of the logits of the other classes (the first
    /// [`SPREAD_CLASSES`]), and the variance of `class`'s logit.
    fn spread<'a>(
        &self,
        class: usize,
        others: impl Iterator<Item = &'a [f32]>,
    ) -> Option<(f32, f32)> {
        let kc = self.classes.min(SPREAD_CLASSES);
        let mut logits = [0.0f32; SPREAD_CLASSES];
        let (mut sum, mut sq) = ([0.0f32; SPREAD_CLASSES], [0.0f32; SPREAD_CLASSES]);
        let (mut new_sum, mut new_sq, mut n) = (0.0f32, 0.0f32, 0usize);
        let one = &mut [0.0f32; 1];
        for x in others {
            self.logits_unchecked(x, &mut logits[..kc]);
            for c in 0..kc {
                sum[c] += logits[c];
                sq[c] += logits[c] * logits[c];
            }
            // The new class's logit alone: it may be past the first SPREAD_CLASSES.
            self.logit_of(class, x, one);
            new_sum += one[0];
            new_sq += one[0] * one[0];
            n += 1;
        }
        if n < 2 {
            return None;
        }
        let nf = n as f32;
        let var = |s: f32, q: f32| (q / nf - (s / nf) * (s / nf)).max(0.0);
        let (mut total, mut used) = (0.0f32, 0usize);
        for c in (0..kc).filter(|&c| c != class) {
            total += var(sum[c], sq[c]);
            used += 1;
        }
        (used > 0).then(|| (total / used as f32, var(new_sum, new_sq)))
    }

    /// The logit of one class into `out[0]`.
    fn logit_of(&self, class: usize, x: &[f32], out: &mut [f32; 1]) {
        let Dims {
            input: d,
            hidden: h,
            capacity: cap,
        } = self.dims;
        let p = self.params();
        let w = self.dims.feature_width();
        let o = self.dims.out_offset();
        let row = &p[o + class * w..o + (class + 1) * w];
        let bias = p[o + cap * w + class];
        out[0] = if h == 0 {
            math::dot(row, x) + bias
        } else {
            let (w1, b1) = (&p[..h * d], &p[h * d..h * d + h]);
            (0..h)
                .map(|j| row[j] * feature(w1, b1, d, j, x))
                .sum::<f32>()
                + bias
        };
    }
}

/// Feature `j` of embedding `x` (`d` values) that a head's output layer sees: the value
/// itself for a linear head (no hidden layer: `w1` and `b1` empty), else hidden unit
/// `j`'s ReLU activation.
fn feature(w1: &[f32], b1: &[f32], d: usize, j: usize, x: &[f32]) -> f32 {
    if b1.is_empty() {
        x[j]
    } else {
        (math::dot(&w1[j * d..(j + 1) * d], x) + b1[j]).max(0.0)
    }
}

/// Classes whose logit spread [`Head::imprint_centered`] measures (a fixed stack buffer).
const SPREAD_CLASSES: usize = 32;

#[cfg(feature = "std")]
impl Head<std::vec::Vec<f32>> {
    /// A head over a freshly allocated `Vec` (host and Linux device).
    pub fn alloc(dims: Dims, classes: usize) -> Result<Self> {
        dims.check()?;
        Head::new(dims, classes, std::vec![0.0; dims.param_len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embeddings that share a large common part (as ReLU outputs do): a plain imprint
    /// of a new class wins on the old classes' samples, a centered one does not, and
    /// still wins on its own.
    #[test]
    fn centered_imprint_ignores_the_common_part() {
        let common = [5.0f32, 5.0, 5.0, 5.0];
        let sample = |axis: usize| -> [f32; 4] {
            let mut x = common;
            x[axis] += 1.0;
            x
        };
        // Two classes told apart by axis 0 against axis 1, around the common part.
        let mut head = Head::alloc(Dims::linear(4, 3), 2).unwrap();
        head.params_mut()[..8].copy_from_slice(&[1.0, -1.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0]);
        let old = [sample(0), sample(1), sample(0), sample(1)];
        let others = || old.iter().map(|x| &x[..]);
        let mut probs = [0.0; 3];
        let mut plain = head.clone();
        plain.add_class().unwrap();
        plain.imprint(2, &sample(2), None).unwrap();
        let wins = |h: &Head<Vec<f32>>, probs: &mut [f32; 3]| {
            others()
                .filter(|x| h.predict(x, probs).unwrap().class == 2)
                .count()
        };
        assert_eq!(
            wins(&plain, &mut probs),
            4,
            "plain imprint takes the old samples"
        );
        head.add_class().unwrap();
        head.imprint_centered(2, &sample(2), others(), None)
            .unwrap();
        assert_eq!(wins(&head, &mut probs), 0);
        for c in 0..3 {
            assert_eq!(head.predict(&sample(c), &mut probs).unwrap().class, c);
        }
        // Nothing to center on: a plain imprint. A bad reference sample: an error.
        let mut h2 = head.clone();
        h2.imprint_centered(2, &sample(2), core::iter::empty(), None)
            .unwrap();
        let bad = [f32::NAN; 4];
        assert!(
            head.imprint_centered(2, &sample(2), [&bad[..]].into_iter(), None)
                .is_err()
        );
    }

    #[test]
    fn linear_logits_are_affine() {
        let dims = Dims::linear(3, 4);
        let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
        let p = head.params_mut();
        p[..3].copy_from_slice(&[1.0, 2.0, 3.0]); // class 0
        p[3..6].copy_from_slice(&[-1.0, 0.0, 1.0]); // class 1
        p[12] = 0.5; // b0
        p[13] = -0.5; // b1
        let mut out = [0.0; 2];
        head.logits(&[1.0, 1.0, 1.0], &mut out).unwrap();
        assert_eq!(out, [6.5, -0.5]);
    }

    #[test]
    fn mlp_logits_match_explicit_forward() {
        let dims = Dims::mlp(5, 7, 3);
        let mut head = Head::new(dims, 3, vec![0.0; dims.param_len()]).unwrap();
        head.init(42);
        let x = [0.3, -1.0, 2.0, 0.5, 0.0];
        let mut hidden = [0.0; 7];
        head.features(&x, &mut hidden).unwrap();
        let p = head.params();
        let o = 7 * 6;
        let mut want = [0.0f32; 3];
        for c in 0..3 {
            want[c] = p[o + 3 * 7 + c] + (0..7).map(|j| p[o + c * 7 + j] * hidden[j]).sum::<f32>();
        }
        let mut got = [0.0; 3];
        head.logits(&x, &mut got).unwrap();
        for c in 0..3 {
            assert!((got[c] - want[c]).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let dims = Dims::linear(3, 2);
        assert!(matches!(
            Head::new(dims, 3, [0.0; 8]),
            Err(Error::Capacity {
                what: "classes",
                ..
            })
        ));
        assert!(matches!(
            Head::new(dims, 2, [0.0; 7]),
            Err(Error::Capacity {
                what: "parameters",
                ..
            })
        ));
        assert!(matches!(
            Head::new(Dims::linear(0, 2), 2, [0.0; 8]),
            Err(Error::Config { .. })
        ));
        let head = Head::new(dims, 2, [0.0; 8]).unwrap();
        let mut probs = [0.0; 2];
        assert!(matches!(
            head.predict(&[1.0, 2.0], &mut probs),
            Err(Error::Length { .. })
        ));
        assert!(matches!(
            head.predict(&[1.0, f32::NAN, 0.0], &mut probs),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            head.predict(&[1.0, 2.0, 3.0], &mut [0.0; 1]),
            Err(Error::Length { .. })
        ));
        let mut full = Head::new(dims, 2, [0.0; 8]).unwrap();
        assert!(matches!(full.add_class(), Err(Error::Capacity { .. })));
    }

    #[test]
    fn top_k_and_uncertainty() {
        let probs = [0.1, 0.45, 0.4, 0.05];
        let top = top_k::<3>(&probs);
        assert_eq!(top.as_slice(), &[(1, 0.45), (2, 0.4), (0, 0.1)]);
        let p = Prediction::from_probs(&probs);
        assert_eq!(p.class, 1);
        assert!((p.margin - 0.05).abs() < 1e-6 && p.is_uncertain(0.1));
        assert!(Prediction::from_probs(&[0.25; 4]).entropy > 0.999);
        assert!(Prediction::from_probs(&[1.0, 0.0, 0.0]).entropy == 0.0);
    }

    #[test]
    fn added_class_can_be_imprinted() {
        let dims = Dims::linear(2, 3);
        let mut head = Head::new(dims, 2, [0.0; 9]).unwrap();
        head.params_mut()[..4].copy_from_slice(&[2.0, 0.0, 0.0, 2.0]);
        let c = head.add_class().unwrap();
        head.imprint(c, &[-3.0, -3.0], None).unwrap();
        assert!((math::norm(head.class_weights(c)) - 2.0).abs() < 1e-6);
        let mut probs = [0.0; 3];
        assert_eq!(head.predict(&[-1.0, -1.0], &mut probs).unwrap().class, c);
        assert!(head.imprint(3, &[1.0, 0.0], None).is_err());
        assert!(head.imprint(c, &[0.0, 0.0], None).is_err());
        assert!(head.imprint(c, &[1.0, 0.0], Some(f32::NAN)).is_err());
        // A failed imprint leaves a trained row as it was.
        let before = head.params().to_vec();
        assert!(head.imprint(0, &[0.0, 0.0], None).is_err());
        assert_eq!(head.params(), &before[..]);
    }

    #[test]
    fn mlp_imprint_uses_hidden_features_of_the_embedding() {
        let dims = Dims::mlp(3, 4, 3);
        let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
        head.init(5);
        let e = [0.5, -1.0, 2.0];
        let mut f = [0.0; 4];
        head.features(&e, &mut f).unwrap();
        let c = head.add_class().unwrap();
        head.imprint(c, &e, Some(3.0)).unwrap();
        let row = head.class_weights(c);
        let n = math::norm(&f);
        for j in 0..4 {
            assert!((row[j] - 3.0 * f[j] / n).abs() < 1e-6);
        }
    }
}
