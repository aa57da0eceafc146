//! The optimizers: their constants, state sizes and persistence codes (here), and the
//! update of each (`sgd.rs`: SGD with or without momentum; `adam.rs`: Adam and AdamW).

mod adam;
mod sgd;

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
pub(in crate::learn) fn update(
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
            sgd::update(params, grads, state, r, scale, wd, lr, momentum, nesterov)
        }
        Optimizer::Adam { beta1, beta2, eps } | Optimizer::AdamW { beta1, beta2, eps } => {
            let decoupled = matches!(opt, Optimizer::AdamW { .. });
            let consts = adam::Constants {
                beta1,
                beta2,
                eps,
                decoupled,
            };
            let (m, v) = state.split_at_mut(np);
            let moments = (&mut m[r.clone()], &mut v[r]);
            adam::update(&consts, step, lr, wd, scale, params, grads, moments)
        }
    }
}
