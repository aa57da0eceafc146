//! Checks edgetune's plan of a bundle's backbone (`edgetune::plan::optimize`, with its
//! own steps) against tract's own (`into_optimized`): the same outputs, bit for bit, on
//! a fixed pseudo-random input. `scripts/cross.sh` runs it on the host and on aarch64
//! as a Pi 4 (no dot product) and as a Pi 5.
//!
//! `plan_check BUNDLE [--expect-packed] [--expect-products] [--portable-products]`: prints
//! what each of edgetune's steps did (products made over one row, epilogues made one
//! pass, im2col, lazy im2col, packings, max pools, products and depthwise convolutions
//! replaced) and the outputs' largest difference; fails if they differ at all, or, with
//! `--expect-packed`, if no im2col was replaced, or with `--expect-products`, if no
//! integer product was. With `--portable-products` the products are replaced with the
//! portable kernel (on a host without the dot product, whose tract may pack as a Pi
//! 5's: x86 with VNNI). With `--threads N` (built with the `threads` feature) edgetune's
//! plan runs on N of tract's threads, every product split among them, against tract's
//! on one: the panels the threads share (`GatherPanels`' kept panels) give the same
//! bits.

use edgetune::bundle::Bundle;
use edgetune::rng::Rng;
use tract_nnef::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or(
        "usage: plan_check BUNDLE [--expect-packed] [--expect-products] [--portable-products] \
         [--threads N]",
    )?;
    let (mut expect_packed, mut expect_products) = (false, false);
    let mut kernel = edgetune::plan::Kernel::of_this_cpu();
    let mut threads = 1;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--expect-packed" => expect_packed = true,
            "--expect-products" => expect_products = true,
            "--portable-products" => kernel = Some(edgetune::plan::Kernel::Portable),
            "--threads" => {
                let n = args.next().ok_or("--threads takes a count")?;
                threads = n
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("--threads takes a count of 1 or more, got {n:?}"))?;
            }
            _ => return Err(format!("unknown argument {a:?}").into()),
        }
    }
    let bundle = Bundle::read(&path)?;
    let load = || edgetune::nnef::read_model(&bundle.backbone);
    let (ours, steps) = edgetune::plan::optimize_with(load()?, kernel)?;
    let ours = ours.into_runnable()?;
    let tracts = load()?.into_optimized()?.into_runnable()?;
    let mut rng = Rng::new(11);
    let inputs: TVec<TValue> = ours
        .model()
        .input_outlets()?
        .iter()
        .map(|o| {
            let fact = ours.model().outlet_fact(*o)?;
            let shape = fact.shape.as_concrete().ok_or("symbolic input")?.to_vec();
            let n = shape.iter().product();
            let x: Vec<f32> = (0..n).map(|_| rng.unit() * 4.0 - 2.0).collect();
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape, x)?
                .into_tensor()
                .cast_to_dt(fact.datum_type)?
                .into_owned()
                .into())
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let a = run_on(threads, || ours.run(inputs.clone()))?;
    let b = tracts.run(inputs)?;
    let mut largest = 0f32;
    for (a, b) in a.iter().zip(&b) {
        let a = a.cast_to::<f32>()?;
        let b = b.cast_to::<f32>()?;
        let (a, b) = (
            a.to_plain_array_view::<f32>()?,
            b.to_plain_array_view::<f32>()?,
        );
        if a.shape() != b.shape() {
            return Err(format!("output shapes {:?} and {:?}", a.shape(), b.shape()).into());
        }
        for (x, y) in a.iter().zip(b.iter()) {
            if x.to_bits() != y.to_bits() {
                largest = largest.max((x - y).abs());
                if largest == 0.0 {
                    largest = f32::MIN_POSITIVE; // +0 against -0, or NaN
                }
            }
        }
    }
    println!(
        "plan_check: {path}: {} products over one row, {} epilogues in one pass, {} im2col, \
         {} lazy im2col and {} packings, {} max pools, {} products ({} of them in \
         pairs of k's) and {} depthwise convolutions replaced, {} clamps and quantizers in \
         one pass, largest difference {largest:e}",
        steps.one_row,
        steps.epilogues,
        steps.im2col,
        steps.gathers,
        steps.packings,
        steps.max_pools,
        steps.products,
        steps.pairs,
        steps.depthwise,
        steps.clamps
    );
    if largest != 0.0 {
        return Err("edgetune's plan and tract's differ".into());
    }
    if expect_packed && steps.im2col == 0 {
        return Err("no im2col was replaced".into());
    }
    if expect_products && steps.products == 0 {
        return Err("no integer product was replaced".into());
    }
    Ok(())
}

/// `run` on `threads` of tract's threads (one: as it is), every product split among
/// them however small.
fn run_on<T>(
    threads: usize,
    run: impl FnOnce() -> TractResult<T> + Send,
) -> Result<T, Box<dyn std::error::Error>>
where
    T: Send,
{
    if threads == 1 {
        return Ok(run()?);
    }
    #[cfg(feature = "threads")]
    {
        use tract_nnef::tract_core::tract_linalg::multithread::{
            Executor, multithread_tract_scope, set_threading_element_threshold,
        };
        set_threading_element_threshold(0);
        Ok(multithread_tract_scope(
            Executor::multithread(threads),
            run,
        )?)
    }
    #[cfg(not(feature = "threads"))]
    Err("--threads: plan_check was built without the `threads` feature".into())
}
