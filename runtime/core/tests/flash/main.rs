//! The NOR flash store (`edgetune_core::flash`) on a simulated NOR flash with true NOR
//! semantics (erase sets 0xFF, a write only clears bits and only into erased words,
//! aligned to its write and erase sizes), that loses power after any number of word
//! writes and sector erases, tearing the word or sector it was busy with. After every
//! cut the flash is "rebooted" and loaded: the state is exactly the one before the save
//! or the one after it, and the next save on the torn flash works.
//!
//! Files: `sim.rs` the simulated flash, `power.rs` the power cuts, `damage.rs` blank,
//! foreign and damaged flash (and agreement with `persist`), `refusals.rs` what the store
//! refuses and what it guarantees besides.

#[path = "../common/mod.rs"]
mod common;
mod damage;
mod power;
mod refusals;
mod sim;

use common::allocations;

use edgetune_core::flash::{self, Store, StoreError};
use edgetune_core::persist::{self, DecodeError, EncodeError, SLDA_DIAGONAL, SLDA_FULL};
use edgetune_core::rng::Rng;
use edgetune_core::slda::{Covariance, Diagonal, Full, Slda};
use edgetune_core::{Config, Dims, Head, Learner, Optimizer};

type V = Vec<f32>;

use sim::{PowerLoss, Sim, TEARS};

fn learner(dims: Dims, opt: Optimizer, seed: u64) -> Learner<V> {
    let cfg = Config {
        optimizer: opt,
        lr: 0.05,
        seed,
        ..Config::DEFAULT
    };
    Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &opt)]).unwrap()
}

/// A head and Adam learner after `steps` steps on samples from `seed`.
fn trained(dims: Dims, seed: u64, steps: usize) -> (Head<V>, Learner<V>) {
    let mut head = Head::alloc(dims, dims.capacity).unwrap();
    head.init(seed);
    let mut l = learner(dims, Optimizer::ADAM, seed);
    let mut rng = Rng::new(seed ^ 0x5EED);
    for _ in 0..steps {
        let x: V = (0..dims.input).map(|_| rng.uniform(-1.0, 1.0)).collect();
        l.step(&mut head, &x, rng.below(dims.capacity)).unwrap();
    }
    (head, l)
}

/// Fresh destination storage, filled with values no saved state has.
fn fresh(dims: Dims) -> (Head<V>, Learner<V>) {
    let mut head = Head::alloc(dims, 0).unwrap();
    head.params_mut().fill(0.125);
    (head, learner(dims, Optimizer::ADAM, 77))
}

/// Everything persisted about a head and learner, byte for byte.
fn snap(head: &Head<V>, learner: &Learner<V>) -> Vec<u8> {
    persist::encode_to_vec(head, Some(learner)).unwrap()
}

type Flash = Sim<4, 128, 1>;

/// Region of `Sim<W, E, R>` for heads of `dims` with Adam, one sector in: the region
/// does not start at offset 0.
fn region<const W: usize, const E: usize, const R: usize>(dims: Dims) -> (u32, u32, usize) {
    let record = flash::max_record_len(dims, Some(&Optimizer::ADAM));
    let len = flash::region_len::<Sim<W, E, R>>(record);
    (E as u32, len as u32, len + 2 * E)
}

/// Reboots `sim` and loads it into fresh storage: the state's snapshot, or the error.
fn boot<const W: usize, const E: usize, const R: usize>(
    sim: &Sim<W, E, R>,
    dims: Dims,
    scratch: &mut [u8],
) -> Result<Vec<u8>, StoreError<PowerLoss>> {
    let (offset, len, _) = region::<W, E, R>(dims);
    let mut store = Store::new(sim.reboot(), offset, len).unwrap();
    let (mut head, mut l) = fresh(dims);
    let before = snap(&head, &l);
    match store.load(&mut head, Some(&mut l), scratch) {
        Ok(found) => {
            assert_eq!(found.header.classes, head.classes());
            Ok(snap(&head, &l))
        }
        Err(e) => {
            assert_eq!(snap(&head, &l), before, "a refused load changed the head");
            Err(e)
        }
    }
}

/// Saves on a powered-on copy of `sim`; the flash afterwards and the operations taken.
fn save<const W: usize, const E: usize, const R: usize>(
    sim: &Sim<W, E, R>,
    dims: Dims,
    state: &(Head<V>, Learner<V>),
    scratch: &mut [u8],
) -> (Sim<W, E, R>, usize) {
    let (offset, len, _) = region::<W, E, R>(dims);
    let mut store = Store::new(sim.reboot(), offset, len).unwrap();
    store.save(&state.0, Some(&state.1), scratch).unwrap();
    let sim = store.into_inner();
    let ops = sim.ops;
    (sim, ops)
}
