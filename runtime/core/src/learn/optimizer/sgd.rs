//! SGD, plain or with (optionally Nesterov) momentum, as PyTorch's (no dampening);
//! weight decay is added to the gradient (L2). State: one momentum value per parameter
//! (none for plain SGD).

use crate::math;

/// One update of `params` (indices `r` of the whole parameter vector) with gradient
/// `scale * grads`; `state` holds the momentum of every parameter.
#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    params: &mut [f32],
    grads: &[f32],
    state: &mut [f32],
    r: core::ops::Range<usize>,
    scale: f32,
    wd: f32,
    lr: f32,
    momentum: f32,
    nesterov: bool,
) {
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
