//! Cross-layer equalization of chained convolutions (Nagel et al., "Data-Free Quantization
//! Through Weight Equalization and Bias Correction", 2019), done in f32 before calibration.
//!
//! A chained convolution's weights are quantized with one scale for the whole tensor (see
//! [`super::Chain`]), so an output channel with small weights would keep few levels. Its
//! output channel `c` is divided by `s_c` and the readers' input channel `c` multiplied by
//! it, which leaves the f32 graph's result unchanged (a `Relu` between commutes with a
//! positive scale; a chain through a `Clip` is left out), and `s_c = sqrt(r1_c / r2_c)` gives channel `c` the same range on both
//! sides (`r1_c`: the largest weight of output channel `c`, `r2_c`: of the readers' input
//! channel `c`).

use std::collections::HashMap;

use anyhow::{Context, Result, ensure};
use tract_onnx::pb::ModelProto;

use super::Chain;
use super::onnx::{f32_tensor, floats};

/// A convolution's weights (and bias) as they are rescaled.
struct Weights {
    dims: Vec<i64>,
    shape: Vec<usize>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
}

/// Equalizes every chain's convolution with its readers; returns how many channels were
/// rescaled.
pub(super) fn equalize(model: &mut ModelProto, chains: &HashMap<usize, Chain>) -> Result<usize> {
    let graph = model.graph.as_mut().context("the model has no graph")?;
    // A `Clip`'s upper bound does not commute with a rescaling: those chains stay as they are.
    let chains: HashMap<usize, &Chain> = chains
        .iter()
        .filter(|(_, c)| !c.bounded)
        .map(|(&i, c)| (i, c))
        .collect();
    let mut weights: HashMap<usize, Weights> = HashMap::new();
    {
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let involved = chains
            .iter()
            .flat_map(|(&i, c)| std::iter::once(i).chain(c.readers.iter().copied()));
        for i in involved {
            if weights.contains_key(&i) {
                continue;
            }
            let n = &graph.node[i];
            let w = init(&n.input[1]).context("a chained convolution's weights")?;
            let (shape, data) = floats(w)?;
            let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
                Some(b) => Some(floats(init(b).context("a chained convolution's bias")?)?.1),
                None => None,
            };
            weights.insert(
                i,
                Weights {
                    dims: w.dims.clone(),
                    shape,
                    w: data,
                    bias,
                },
            );
        }
    }
    let mut rescaled = 0;
    let mut order: Vec<_> = chains.iter().collect();
    order.sort_by_key(|(i, _)| **i);
    for (&i, chain) in order {
        let out = weights[&i].shape[0];
        for j in &chain.readers {
            ensure!(
                weights[j].shape[1] == out,
                "a convolution reads {out} channels with weights for {}",
                weights[j].shape[1]
            );
        }
        for c in 0..out {
            let r1 = channel_max(&weights[&i], c, 0);
            let r2 = chain
                .readers
                .iter()
                .map(|j| channel_max(&weights[j], c, 1))
                .fold(0.0f32, f32::max);
            if r1 <= 0.0 || r2 <= 0.0 {
                continue;
            }
            let s = (r1 / r2).sqrt();
            scale_channel(weights.get_mut(&i).expect("loaded"), c, 0, s.recip());
            for j in &chain.readers {
                scale_channel(weights.get_mut(j).expect("loaded"), c, 1, s);
            }
            rescaled += 1;
        }
    }
    for (i, wt) in weights {
        let name = super::layer_name(&graph.node[i]);
        let w_name = format!("{name}.weight_equalized");
        graph.initializer.push(f32_tensor(&w_name, &wt.dims, &wt.w));
        let n = &mut graph.node[i];
        n.input[1] = w_name;
        if let Some(b) = wt.bias {
            let b_name = format!("{name}.bias_equalized");
            graph
                .initializer
                .push(f32_tensor(&b_name, &[b.len() as i64], &b));
            graph.node[i].input[2] = b_name;
        }
    }
    super::onnx::drop_unused_initializers(model);
    Ok(rescaled)
}

/// The positions of channel `c` along `axis` (0: output, 1: input) of OIHW weights.
fn channel(shape: &[usize], c: usize, axis: usize) -> impl Iterator<Item = usize> + '_ {
    let inner: usize = shape[2..].iter().product();
    let per_out = shape[1] * inner;
    let (outer, start, len) = if axis == 0 {
        (1, c * per_out, per_out)
    } else {
        (shape[0], c * inner, inner)
    };
    (0..outer).flat_map(move |o| (0..len).map(move |k| o * per_out + start + k))
}

fn channel_max(w: &Weights, c: usize, axis: usize) -> f32 {
    channel(&w.shape, c, axis).fold(0.0f32, |m, k| m.max(w.w[k].abs()))
}

fn scale_channel(w: &mut Weights, c: usize, axis: usize, s: f32) {
    let idx: Vec<usize> = channel(&w.shape, c, axis).collect();
    for k in idx {
        w.w[k] *= s;
    }
    if axis == 0
        && let Some(b) = w.bias.as_mut()
    {
        b[c] *= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_of_oihw_weights() {
        // 2 outputs, 3 inputs, 1×2 kernels.
        let shape = [2, 3, 1, 2];
        assert_eq!(
            channel(&shape, 1, 0).collect::<Vec<_>>(),
            vec![6, 7, 8, 9, 10, 11]
        );
        assert_eq!(
            channel(&shape, 2, 1).collect::<Vec<_>>(),
            vec![4, 5, 10, 11]
        );
    }

    #[test]
    fn a_channel_and_its_readers_end_with_the_same_range() {
        let mut a = Weights {
            dims: vec![2, 1, 1, 1],
            shape: vec![2, 1, 1, 1],
            w: vec![4.0, 0.25],
            bias: Some(vec![2.0, 0.5]),
        };
        let mut b = Weights {
            dims: vec![1, 2, 1, 1],
            shape: vec![1, 2, 1, 1],
            w: vec![1.0, 1.0],
            bias: None,
        };
        for c in 0..2 {
            let s = (channel_max(&a, c, 0) / channel_max(&b, c, 1)).sqrt();
            scale_channel(&mut a, c, 0, s.recip());
            scale_channel(&mut b, c, 1, s);
        }
        assert_eq!(a.w, vec![2.0, 0.5]);
        assert_eq!(b.w, vec![2.0, 0.5]);
        // The bias follows its channel; the product through both is unchanged.
        assert_eq!(a.bias, Some(vec![1.0, 1.0]));
        assert_eq!((a.w[0] * b.w[0], a.w[1] * b.w[1]), (4.0, 0.25));
    }
}
