//! Learning-rate schedules: warm-up, then constant, step, cosine or custom decay.

/// How the learning rate decays after warm-up, as a factor of the base rate.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decay {
    /// Always 1.
    Constant,
    /// Multiplied by `gamma` every `every` steps.
    Step {
        /// Steps between decays (≥ 1).
        every: u32,
        /// Factor per decay.
        gamma: f32,
    },
    /// Cosine from 1 down to `min_factor` over `total` steps, then flat.
    Cosine {
        /// Steps of the cosine (≥ 1).
        total: u32,
        /// Final factor.
        min_factor: f32,
    },
    /// The hook: any function of the step count (after warm-up) to a factor.
    Custom(fn(u32) -> f32),
}

impl PartialEq for Decay {
    fn eq(&self, other: &Self) -> bool {
        match (*self, *other) {
            (Decay::Constant, Decay::Constant) => true,
            (Decay::Step { every: a, gamma: b }, Decay::Step { every: c, gamma: d }) => {
                a == c && b == d
            }
            (
                Decay::Cosine {
                    total: a,
                    min_factor: b,
                },
                Decay::Cosine {
                    total: c,
                    min_factor: d,
                },
            ) => a == c && b == d,
            (Decay::Custom(f), Decay::Custom(g)) => core::ptr::fn_addr_eq(f, g),
            _ => false,
        }
    }
}

/// Learning-rate schedule: linear warm-up from 0 over `warmup` steps, then `decay`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Schedule {
    /// Warm-up steps (0 for none).
    pub warmup: u32,
    /// Decay after warm-up.
    pub decay: Decay,
}

impl Schedule {
    /// No warm-up, constant rate.
    pub const CONSTANT: Schedule = Schedule {
        warmup: 0,
        decay: Decay::Constant,
    };

    /// The factor applied to the base learning rate at optimizer step `step` (from 0).
    pub fn factor(&self, step: u32) -> f32 {
        if step < self.warmup {
            return (step + 1) as f32 / (self.warmup + 1) as f32;
        }
        let t = step - self.warmup;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Step { every, gamma } => libm::powf(gamma, (t / every.max(1)) as f32),
            Decay::Cosine { total, min_factor } => {
                let r = (t.min(total) as f32) / total.max(1) as f32;
                min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + libm::cosf(core::f32::consts::PI * r))
            }
            Decay::Custom(f) => f(t),
        }
    }
}
