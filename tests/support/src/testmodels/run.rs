//! The reference run: a test model's output as tract-onnx computes it from the ONNX file,
//! what a converted bundle is compared against.

use std::path::Path;

use tract_onnx::prelude::*;

/// The first output of the ONNX model at `path`, run by tract-onnx on `inputs` (one tensor
/// per model input, their shapes and types set as the input facts), as f32 values.
pub fn run(path: &Path, inputs: TVec<Tensor>) -> Vec<f32> {
    let mut model = tract_onnx::onnx().model_for_path(path).unwrap();
    for (i, t) in inputs.iter().enumerate() {
        let fact = InferenceFact::dt_shape(t.datum_type(), t.shape());
        model.set_input_fact(i, fact).unwrap();
    }
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let out = plan
        .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
        .unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}
