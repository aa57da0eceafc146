//! Learning steps of the head, for counting instructions rather than timing them:
//!
//!     cargo build --release -p benches --bin step-count
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!         target/release/step-count mlp WARM N
//!
//! runs WARM untimed `Learner::step`s of an Adam head (`mlp`: 1280×128×10, `linear`:
//! 1280×10, the shapes of `benches/head.rs`), then N more. The cost of one step is
//! (count(WARM, N) − count(WARM, 0)) / N. Criterion's timings of these steps move by tens
//! of percent with code layout alone (a change that does not touch the learner's code,
//! or `-C llvm-args=-align-loops=64`, moves `mlp 1280x128x10 adam after 2000 steps` by
//! 10–50 %), and these machines are shared: an instruction count is the same on every
//! run and says whether the code a step executes changed.

use std::hint::black_box;

use edgetune::{Config, Dims, Head, Learner, Optimizer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [shape, warm, n] => shape_dims(shape)
            .zip(warm.parse::<usize>().ok())
            .zip(n.parse::<usize>().ok()),
        _ => None,
    };
    let Some(((dims, warm), n)) = parsed else {
        eprintln!("usage: step-count mlp|linear WARM N");
        std::process::exit(2);
    };
    let mut head = Head::alloc(dims, 10).expect("head");
    head.init(1);
    let cfg = Config {
        optimizer: Optimizer::ADAM,
        ..Config::DEFAULT
    };
    let mut learner = Learner::alloc(dims, cfg).expect("learner");
    let xs = [input(dims.input, 0.0), input(dims.input, 1.0)];
    let mut loss = 0.0;
    for i in 0..warm + n {
        loss += learner
            .step(&mut head, black_box(&xs[i & 1]), i % 10)
            .expect("step");
    }
    println!(
        "{} steps, mean loss {:.4}",
        warm + n,
        loss / (warm + n).max(1) as f32
    );
}

fn shape_dims(shape: &str) -> Option<Dims> {
    match shape {
        "mlp" => Some(Dims::mlp(1280, 128, 10)),
        "linear" => Some(Dims::linear(1280, 10)),
        _ => None,
    }
}

/// The inputs of `benches/head.rs`.
fn input(d: usize, seed: f32) -> Vec<f32> {
    (0..d).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
}
