//! The head rows: each workload of `benches::heads` by edgetune and by PyTorch, timed
//! interleaved, with one call from the same weights compared.

use anyhow::{Context, Result};
use benches::heads::{CASES, Case, Kind, Runner};
use benches::stats::{self, Summary};
use benches::torch::{self, Torch};
use serde_json::json;

use crate::alloc::allocations_per_call;
use crate::args::Plan;
use crate::backbone::max_abs_diff;

/// How one call from the same weights agrees between edgetune and PyTorch: |Δ loss|
/// (steps only) and the largest |Δ| of the parameters after it (step) or of the
/// probabilities (predict).
pub type Agreement = (Option<f32>, f32);

/// One head workload, both sides.
pub struct HeadRow {
    pub case: Case,
    pub edgetune: Summary,
    pub edgetune_inner: usize,
    pub allocs: f64,
    /// PyTorch's time and sample length, or why it did not run.
    pub torch: std::result::Result<(Summary, usize), String>,
    /// |Δ loss| and max |Δ| of the parameters after one step from the same weights
    /// (step), or max |Δ| of the probabilities (predict).
    pub agreement: Option<Agreement>,
}

/// PyTorch's side of one case: setup, the check from the same weights, calibration.
/// Returns the check's agreement and PyTorch's sample length.
fn torch_setup(torch: &mut Torch, case: Case, plan: &Plan) -> Result<(Agreement, usize)> {
    torch.request(&case.torch_spec())?;
    // The same starting weights on both sides, one call, compared.
    let mut reference = Runner::new(case)?;
    let params = reference.head.params().to_vec();
    let answer = torch.request(&json!({ "op": "check", "name": case.name, "params": params }))?;
    let loss = reference.call()?;
    let agreement = match case.kind {
        Kind::Predict => (
            None,
            max_abs_diff(reference.probs(), &torch::floats(&answer["probs"])?),
        ),
        Kind::Step => {
            let theirs = torch::floats(&answer["params"])?;
            anyhow::ensure!(
                theirs.len() == reference.head.params().len(),
                "PyTorch returned {} parameters, the head has {}",
                theirs.len(),
                reference.head.params().len()
            );
            let their_loss = answer["loss"].as_f64().context("no loss")? as f32;
            (
                Some((loss - their_loss).abs()),
                max_abs_diff(reference.head.params(), &theirs),
            )
        }
    };
    let inner = torch.request(&json!({
        "op": "calibrate", "name": case.name,
        "warm_ns": plan.head_warm_ns, "target_ns": plan.head_sample_ns,
    }))?["inner"]
        .as_u64()
        .context("no inner count")? as usize;
    Ok((agreement, inner))
}

pub fn head_rows(
    plan: &Plan,
    torch: &mut std::result::Result<Torch, String>,
) -> Result<Vec<HeadRow>> {
    let mut rows = Vec::new();
    for case in CASES {
        eprintln!("compare: head, {}…", case.name);
        let mut runner = Runner::new(case)?;
        let mut torch_state: std::result::Result<(&mut Torch, Agreement, usize), String> =
            match torch {
                Ok(t) => match torch_setup(t, case, plan) {
                    Ok((agreement, inner)) => Ok((t, agreement, inner)),
                    Err(e) => Err(format!("{e:#}")),
                },
                Err(why) => Err(why.clone()),
            };
        let inner = runner.calibrate(plan.head_warm_ns, plan.head_sample_ns)?;
        let (rounds, per) = plan.head;
        let mut ours = |k: usize| runner.sample(k, inner);
        let (edgetune, torch_result) = match &mut torch_state {
            Ok((t, _, _)) => {
                let mut theirs = |k: usize| t.run(case.name, k);
                match stats::interleave(rounds, per, &mut [&mut ours, &mut theirs]) {
                    Ok(s) => (s[0].clone(), Ok(s[1].clone())),
                    Err(e) => {
                        let why = format!("{e:#}");
                        (
                            stats::interleave(rounds, per, &mut [&mut ours])?.remove(0),
                            Err(why),
                        )
                    }
                }
            }
            Err(why) => (
                stats::interleave(rounds, per, &mut [&mut ours])?.remove(0),
                Err(why.clone()),
            ),
        };
        let allocs = allocations_per_call(1000, || runner.call().map(drop))?;
        let (torch, agreement) = match (torch_state, torch_result) {
            (Ok((_, agreement, inner)), Ok(times)) => (
                Ok((Summary::of(&times).context("no samples")?, inner)),
                Some(agreement),
            ),
            (Err(why), _) | (Ok(_), Err(why)) => (Err(why), None),
        };
        rows.push(HeadRow {
            case,
            edgetune: Summary::of(&edgetune).context("no samples")?,
            edgetune_inner: inner,
            allocs,
            torch,
            agreement,
        });
    }
    Ok(rows)
}
