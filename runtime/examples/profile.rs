//! Where a bundle's backbone spends its time, per tract operator: the profile that says
//! why a speed target is or is not met (README, Performance).
//!
//! `cargo run --release -p edgetune --features tract --example profile -- BUNDLE [N]`
//!
//! Runs N inferences (default 20, after 3 warm-up runs) of the device's plan on one
//! thread and prints, per operator type, the time per inference, its share and the
//! number of nodes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgetune::bundle::{Bundle, Layout};
use tract_nnef::prelude::*;
use tract_nnef::tract_core::plan::{SimpleState, eval};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: profile BUNDLE [N]")?;
    let n: u32 = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("N must be a count, got {n:?}"))?,
        None => 20,
    };
    let bundle = Bundle::read(&path)?;
    let model = edgetune::nnef::read_model(&bundle.backbone)?;
    let plan = edgetune::plan::optimize(model)?.into_runnable()?;
    let inputs: TVec<TValue> = plan
        .model()
        .input_outlets()?
        .iter()
        .map(|o| {
            let fact = plan.model().outlet_fact(*o)?;
            let shape: Vec<usize> = fact.shape.as_concrete().ok_or("symbolic input")?.to_vec();
            let t = if bundle.manifest.input.layout == Layout::Tokens {
                Tensor::zero_dt(fact.datum_type, &shape)?
            } else {
                let len = shape.iter().product::<usize>();
                let v: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 255) as f32 / 255.0)
                    .collect();
                Tensor::from_shape(&shape, &v)?
            };
            Ok::<_, Box<dyn std::error::Error>>(t.into_tvalue())
        })
        .collect::<Result<_, _>>()?;
    let mut state = SimpleState::new(&plan)?;
    for _ in 0..3 {
        state.run(inputs.clone())?;
    }
    let mut per_op: HashMap<String, (Duration, usize)> = HashMap::new();
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, input| {
            let t = Instant::now();
            let r = eval(ctx, op_state, node, input);
            let e = per_op.entry(node.op().name().to_string()).or_default();
            e.0 += t.elapsed();
            e.1 += 1;
            r
        })?;
        total += start.elapsed();
    }
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    let per = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
    println!(
        "{path}: {:.2} ms per inference ({n} runs, one thread)",
        per(total)
    );
    println!(
        "{:<28} {:>10} {:>7} {:>6}",
        "operator", "ms", "share", "nodes"
    );
    for (op, (d, count)) in rows {
        println!(
            "{op:<28} {:>10.3} {:>6.1}% {:>6}",
            per(d),
            100.0 * d.as_secs_f64() / total.as_secs_f64(),
            count / n as usize
        );
    }
    Ok(())
}
