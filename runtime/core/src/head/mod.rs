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
//! Files: `dims.rs` the dimensions and that layout, `prediction.rs` what a prediction
//! says, `imprint.rs` weight imprinting; this file holds the head and its forward pass.
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

mod dims;
mod imprint;
mod prediction;

use crate::error::{Error, Result, check_vector};
use crate::math;
use crate::rng::Rng;

pub use dims::{Dims, HeadKind};
pub use prediction::{Prediction, top_k};

/// Flat `f32` storage for parameters, optimizer state and scratch: a fixed array, a
/// `&mut [f32]` into a static, or a `Vec<f32>`.
pub trait Storage: AsRef<[f32]> + AsMut<[f32]> {}
impl<T: AsRef<[f32]> + AsMut<[f32]> + ?Sized> Storage for T {}

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

    /// The parameters as layers.
    fn layers(&self) -> Layers<'_> {
        let [hidden_bias, out, out_bias, end] = self.dims.layer_starts();
        let p = self.params();
        Layers {
            w1: &p[..hidden_bias],
            b1: &p[hidden_bias..out],
            w2: &p[out..out_bias],
            b2: &p[out_bias..end],
        }
    }

    /// The parameters as layers, the output layer writable.
    fn layers_mut(&mut self) -> LayersMut<'_> {
        let [hidden_bias, out, out_bias, end] = self.dims.layer_starts();
        let (hidden, output) = self.params_mut().split_at_mut(out);
        let (w1, b1) = hidden.split_at(hidden_bias);
        let (w2, b2) = output.split_at_mut(out_bias - out);
        LayersMut {
            w1,
            b1,
            w2,
            b2: &mut b2[..end - out_bias],
        }
    }

    fn logits_unchecked(&self, x: &[f32], out: &mut [f32]) {
        let (d, h) = (self.dims.input, self.dims.hidden);
        let Layers { w1, b1, w2, b2 } = self.layers();
        if h == 0 {
            for (c, o) in out.iter_mut().enumerate() {
                *o = math::dot(&w2[c * d..(c + 1) * d], x) + b2[c];
            }
        } else {
            // Hidden units are computed one at a time and folded into the logits, so a
            // prediction needs no scratch memory.
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
}

/// A head's parameters by layer: the hidden layer's weights and biases (empty for a
/// linear head), then the output layer's.
struct Layers<'a> {
    w1: &'a [f32],
    b1: &'a [f32],
    w2: &'a [f32],
    b2: &'a [f32],
}

/// [`Layers`] with the output layer writable.
struct LayersMut<'a> {
    w1: &'a [f32],
    b1: &'a [f32],
    w2: &'a mut [f32],
    b2: &'a mut [f32],
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

#[cfg(feature = "std")]
impl Head<std::vec::Vec<f32>> {
    /// A head over a freshly allocated `Vec` (host and Linux device).
    pub fn alloc(dims: Dims, classes: usize) -> Result<Self> {
        dims.check()?;
        Head::new(dims, classes, std::vec![0.0; dims.param_len()])
    }
}

#[cfg(test)]
mod tests;
