//! Finding the embedding of models the project builds: the classifier's weights taken
//! out of the graph must reproduce the model's own logits from its embedding.

use edgetune::rng::Rng;
use edgetune_testkit::testmodels::{
    self, BertConfig, Builder, DataType, MobileNetConfig, ResNetConfig,
};
use finetune_head::detect::{find_classifier, find_embedding};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

fn proto(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).unwrap()
}

/// The embedding and the logits of a CNN for one image, from tract.
fn embedding_and_logits(bytes: &[u8], resolution: usize) -> (Vec<f32>, Vec<f32>) {
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
    model
        .select_outputs_by_name(["embedding", "logits"])
        .unwrap();
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let mut rng = Rng::new(3);
    let data: Vec<f32> = (0..3 * resolution * resolution)
        .map(|_| rng.uniform(-1.0, 1.0))
        .collect();
    let x = Tensor::from_shape(&[1, 3, resolution, resolution], &data).unwrap();
    let out = plan.run(tvec![x.into_tvalue()]).unwrap();
    let v = |i: usize| {
        out[i]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    };
    (v(0), v(1))
}

fn check_cnn(bytes: &[u8], resolution: usize) {
    let c = find_classifier(&proto(bytes)).unwrap();
    assert_eq!(
        (c.node.as_str(), c.embedding.as_str(), c.classes),
        ("classifier", "embedding", 10)
    );
    let (emb, logits) = embedding_and_logits(bytes, resolution);
    assert_eq!(emb.len(), c.dim);
    for (k, &logit) in logits.iter().enumerate() {
        let z: f32 = c.bias[k]
            + (0..c.dim)
                .map(|j| c.weight[k * c.dim + j] * emb[j])
                .sum::<f32>();
        assert!(
            (z - logit).abs() <= 1e-4 * (1.0 + logit.abs()),
            "class {k}: {z} vs {logit}"
        );
    }
}

#[test]
fn mobilenet_and_resnet_classifiers_are_found_and_reproduce_the_logits() {
    let m = MobileNetConfig::small();
    check_cnn(&testmodels::mobilenet(&m), 64);
    let r = ResNetConfig::small();
    check_cnn(&testmodels::resnet(&r), 64);
}

#[test]
fn matmul_add_softmax_classifier_is_found() {
    let mut b = Builder::new("mlp", 1);
    let x = b.input("features", DataType::Float, &[1, 8]);
    let h = b.linear("hidden", &x, 8, 6);
    let h = b.relu("hidden.relu", &h);
    let z = b.linear("head", &h, 6, 3);
    let p = b.softmax("probs", &z, 1);
    b.output(&p, "probs", DataType::Float, &[1, 3]);
    let c = find_classifier(&proto(&b.finish())).unwrap();
    assert_eq!(
        (c.embedding.as_str(), c.dim, c.classes),
        ("hidden.relu", 6, 3)
    );
    assert_eq!(c.weight.len(), 18);
}

#[test]
fn a_model_without_a_classifier_says_so_and_names_the_override() {
    let bert = testmodels::bert(&BertConfig::default());
    let e = format!("{:#}", find_classifier(&proto(&bert)).unwrap_err());
    assert!(
        e.contains("no classifier found") && e.contains("--embedding"),
        "{e}"
    );
    assert!(
        e.contains("LayerNormalization"),
        "names what produces the output: {e}"
    );
}

#[test]
fn embedding_override_by_tensor_or_node_and_unknown_names() {
    let m = testmodels::mobilenet(&MobileNetConfig::small());
    let model = proto(&m);
    let by_tensor = find_embedding(&model, Some("embedding")).unwrap();
    assert_eq!(by_tensor.tensor, "embedding");
    assert!(
        by_tensor.classifier.is_some(),
        "the classifier reading it is kept"
    );
    let auto = find_embedding(&model, None).unwrap();
    assert_eq!(auto, by_tensor);
    let graph = model.graph.as_ref().unwrap();
    let gap = graph
        .node
        .iter()
        .find(|n| n.op_type == "GlobalAveragePool")
        .unwrap();
    let by_node = find_embedding(&model, Some(&gap.name)).unwrap();
    assert_eq!(by_node.tensor, gap.output[0]);
    assert!(by_node.classifier.is_none());
    let e = format!(
        "{:#}",
        find_embedding(&model, Some("clasifier")).unwrap_err()
    );
    assert!(
        e.contains("no tensor or node of that name") && e.contains("classifier"),
        "{e}"
    );
}
