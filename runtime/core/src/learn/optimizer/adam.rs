//! Adam (Kingma & Ba; weight decay added to the gradient, L2) and AdamW (Loshchilov &
//! Hutter; weight decay applied to the weights directly). State: the first moments of
//! every parameter, then the second moments (split by the caller).

use crate::math;

/// An Adam's constants.
pub(super) struct Constants {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// AdamW: weight decay decoupled from the gradient.
    pub decoupled: bool,
}

/// Update number `step` (from 0) of `params` with gradient `scale * grads`; `moments`
/// are the parameters' first and second moments.
#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    c: &Constants,
    step: u32,
    lr: f32,
    wd: f32,
    scale: f32,
    params: &mut [f32],
    grads: &[f32],
    moments: (&mut [f32], &mut [f32]),
) {
    let Constants {
        beta1,
        beta2,
        eps,
        decoupled,
    } = *c;
    let t = (step as f32) + 1.0;
    let c1 = lr / (1.0 - libm::powf(beta1, t));
    let c2 = 1.0 / (1.0 - libm::powf(beta2, t));
    let (m, v) = moments;
    let (l2, shrink) = if decoupled {
        (0.0, 1.0 - lr * wd)
    } else {
        (wd, 1.0)
    };
    adam_kernel(
        params, grads, m, v, scale, l2, shrink, beta1, beta2, c1, c2, eps,
    );
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
