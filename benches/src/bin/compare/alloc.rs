//! Heap allocations per call: this binary's counting global allocator, and the learning
//! paths measured with it beyond one head step (`Online::learn`, the device `Engine`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;
use edgetune::buffer::SampleBuffer;
use edgetune::classes::ClassMeans;
use edgetune::online::{Online, OnlineConfig};
use edgetune::rng::Rng;
use edgetune::{Config, Dims, Head, Learner};
use edgetune_device::engine::{Engine, EngineConfig};

/// Counts allocations while armed, from any thread (ONNX Runtime's and tract's pools).
struct Counting;
static ARMED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations (and reallocations) per call of `f` over `calls` calls.
pub fn allocations_per_call(calls: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    COUNT.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let mut result = Ok(());
    for _ in 0..calls {
        result = f();
        if result.is_err() {
            break;
        }
    }
    ARMED.store(false, Ordering::SeqCst);
    result?;
    Ok(COUNT.load(Ordering::SeqCst) as f64 / calls as f64)
}

/// The report's parts that are not timed.
pub struct Extra {
    pub id: &'static str,
    pub what: String,
    pub per_call: f64,
    pub calls: usize,
}

const DIM: usize = 1280;

/// A class-`class` embedding-like sample (the serve bench's).
fn sample(rng: &mut Rng, class: usize, x: &mut [f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = rng.uniform(0.0, 0.2) + if i % 10 == class { 1.0 } else { 0.0 };
    }
}

/// Allocations of the learning paths beyond one step, after warm-up (10 classes learned,
/// buffers full).
pub fn learning_allocations() -> Result<Vec<Extra>> {
    let calls = 200;
    let dims = Dims::linear(DIM, 16);
    let mut head = Head::alloc(dims, 0)?;
    head.init(1);
    let learner = Learner::alloc(dims, Config::DEFAULT)?;
    let buffer = SampleBuffer::<Vec<f32>, 256>::new(
        DIM,
        vec![0.0; SampleBuffer::<(), 256>::storage_len(DIM)],
    )?;
    let means = ClassMeans::new(DIM, 16, vec![0.0; ClassMeans::<()>::storage_len(DIM, 16)])?;
    let mut online = Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT)?;
    let mut rng = Rng::new(2);
    let mut x = vec![0.0; DIM];
    for k in 0..400 {
        let c = k % 10;
        sample(&mut rng, c, &mut x);
        online.learn(&x, c.min(online.head().classes()))?;
    }
    let mut k = 0;
    let online_allocs = allocations_per_call(calls, || {
        k += 1;
        sample(&mut rng, k % 10, &mut x);
        online.learn(&x, k % 10)?;
        Ok(())
    })?;

    let mut head = Head::alloc(dims, 0)?;
    head.init(1);
    let mut engine = Engine::new(head, EngineConfig::DEFAULT)?;
    for k in 0..400 {
        let c = k % 10;
        sample(&mut rng, c, &mut x);
        let s = engine.observe(&x)?.sample;
        engine.label(Some(s), c.min(engine.classes()))?;
    }
    let mut k = 0;
    let engine_allocs = allocations_per_call(calls, || {
        k += 1;
        sample(&mut rng, k % 10, &mut x);
        let s = engine.observe(&x)?.sample;
        engine.label(Some(s), k % 10)?;
        Ok(())
    })?;
    let d = OnlineConfig::DEFAULT;
    let e = EngineConfig::DEFAULT.online;
    Ok(vec![
        Extra {
            id: "online-learn",
            what: format!(
                "`Online::learn` of one label (linear 1280→10, room for 16; {} Adam steps over the sample and {} replayed; replay buffer of 256 full)",
                d.steps, d.replay
            ),
            per_call: online_allocs,
            calls,
        },
        Extra {
            id: "engine-observe-label",
            what: format!(
                "device `Engine::observe` + `label` (the same head; {} Adam steps over the sample and {} replayed; regression guard)",
                e.steps, e.replay
            ),
            per_call: engine_allocs,
            calls,
        },
    ])
}
