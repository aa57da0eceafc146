//! A head's dimensions and kind, and where each parameter block sits in its flat
//! storage (the layout table in [`super`]'s module docs).

use core::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

    /// Number of `f32` parameters (the storage a [`Head`](super::Head) needs), for the full capacity.
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

    /// Offset of the output layer's weights (`W` or `W2`) in the parameters: the length
    /// of the hidden layer's weights and biases, 0 for a linear head.
    pub const fn out_offset(&self) -> usize {
        if self.hidden == 0 {
            0
        } else {
            self.hidden * (self.input + 1)
        }
    }

    /// Where the hidden biases, the output weights, the output biases and the parameters
    /// end start in the flat storage (the hidden blocks are empty for a linear head).
    pub(super) const fn layer_starts(&self) -> [usize; 4] {
        let out = self.out_offset();
        let out_bias = out + self.capacity * self.feature_width();
        [
            self.hidden * self.input,
            out,
            out_bias,
            out_bias + self.capacity,
        ]
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
