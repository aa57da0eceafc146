//! The optimizers, their state sizes and codes, and their update kernels.

use crate::math;

/// The optimizer and its constants.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Optimizer {
    /// SGD with (optionally Nesterov) momentum, as PyTorch's (no dampening); weight
    /// decay is added to the gradient (L2).
    Sgd {
        /// Momentum in [0, 1); 0 is plain SGD.
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam (Kingma & Ba); weight decay is added to the gradient (L2).
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator term.
        eps: f32,
    },
    /// AdamW (Loshchilov & Hutter): Adam with weight decay applied to the weights
    /// directly, decoupled from the gradient.
    AdamW {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator term.
        eps: f32,
    },
}

impl Optimizer {
    /// Adam with PyTorch's defaults.
    pub const ADAM: Optimizer = Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    /// AdamW with PyTorch's defaults.
    pub const ADAMW: Optimizer = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    /// SGD with momentum 0.9.
    pub const SGD_MOMENTUM: Optimizer = Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
    };

    /// Optimizer state values per parameter (momentum: 1; Adam: 2).
    pub const fn state_per_param(&self) -> usize {
        match Optimizer::state_per_param_of(self.code()) {
            Some(n) => n,
            None => 0,
        }
    }

    /// Optimizer state values per parameter of the optimizer with [`Optimizer::code`]
    /// `code`; `None` for a code that is no optimizer's.
    pub const fn state_per_param_of(code: u8) -> Option<usize> {
        match code {
            0 => Some(0),
            1 => Some(1),
            2 | 3 => Some(2),
            _ => None,
        }
    }

    /// A stable code for persistence: 0 none (plain SGD), 1 SGD with momentum, 2 Adam,
    /// 3 AdamW.
    pub const fn code(&self) -> u8 {
        match self {
            Optimizer::Sgd { momentum, .. } => {
                if *momentum == 0.0 {
                    0
                } else {
                    1
                }
            }
            Optimizer::Adam { .. } => 2,
            Optimizer::AdamW { .. } => 3,
        }
    }
}

/// One optimizer update of the parameters `params` (whose indices in the whole parameter
/// vector are `r`) with gradient `scale * grads`.
#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    opt: &Optimizer,
    step: u32,
    lr: f32,
    wd: f32,
    scale: f32,
    params: &mut [f32],
    grads: &[f32],
    state: &mut [f32],
    np: usize,
    r: core::ops::Range<usize>,
) {
    match *opt {
        Optimizer::Sgd { momentum, nesterov } => {
            if momentum == 0.0 {
                sgd_kernel(params, grads, scale, wd, lr);
            } else {
                momentum_kernel(
                    params,
                    grads,
                    &mut state[r],
                    scale,
                    wd,
                    lr,
                    momentum,
                    nesterov,
                );
            }
        }
        Optimizer::Adam { beta1, beta2, eps } | Optimizer::AdamW { beta1, beta2, eps } => {
            let decoupled = matches!(opt, Optimizer::AdamW { .. });
            let t = (step as f32) + 1.0;
            let c1 = lr / (1.0 - libm::powf(beta1, t));
            let c2 = 1.0 / (1.0 - libm::powf(beta2, t));
            let (m, v) = state.split_at_mut(np);
            let (m, v) = (&mut m[r.clone()], &mut v[r]);
            let (l2, shrink) = if decoupled {
                (0.0, 1.0 - lr * wd)
            } else {
                (wd, 1.0)
            };
            adam_kernel(
                params, grads, m, v, scale, l2, shrink, beta1, beta2, c1, c2, eps,
            );
        }
    }
}

math::simd_dispatch! {
fn sgd_kernel(params: &mut [f32], grads: &[f32], scale: f32, wd: f32, lr: f32) {
    for (w, g) in params.iter_mut().zip(grads) {
        let gr = *g * scale + wd * *w;
        *w -= lr * gr;
    }
}
}

math::simd_dispatch! {
fn momentum_kernel(params: &mut [f32], grads: &[f32], buf: &mut [f32], scale: f32, wd: f32, lr: f32, momentum: f32, nesterov: bool) {
    for ((w, g), b) in params.iter_mut().zip(grads).zip(buf) {
        let gr = *g * scale + wd * *w;
        *b = momentum * *b + gr;
        let u = if nesterov { gr + momentum * *b } else { *b };
        *w -= lr * u;
    }
}
}

math::simd_dispatch! {
fn adam_kernel(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    scale: f32,
    l2: f32,
    shrink: f32,
    beta1: f32,
    beta2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
) {
    for (((w, g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
        let gr = *g * scale + l2 * *w;
        *m = beta1 * *m + (1.0 - beta1) * gr;
        *v = beta2 * *v + (1.0 - beta2) * gr * gr;
        *w = *w * shrink - c1 * *m / (math::sqrt(*v * c2) + eps);
    }
}
}
