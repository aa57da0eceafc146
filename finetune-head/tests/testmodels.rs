//! The generated test models load and run in tract, are not degenerate, are deterministic
//! for a seed, and expose what the converter needs (the `embedding` tensor, a wired mask).

use edgetune::rng::Rng;
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, BertConfig, MobileNetConfig, ResNetConfig};
use tract_onnx::prelude::*;

/// Small shapes keep the dev-profile tests fast.
fn small_mobilenet(seed: u64) -> MobileNetConfig {
    MobileNetConfig {
        seed,
        ..MobileNetConfig::small()
    }
}

fn small_resnet(seed: u64) -> ResNetConfig {
    ResNetConfig {
        stages: vec![(16, 1), (32, 1), (64, 1)],
        seed,
        ..ResNetConfig::small()
    }
}

fn small_bert(seed: u64) -> BertConfig {
    BertConfig {
        seed,
        ..Default::default()
    }
}

/// Decodes, optionally cuts at named outputs, optimizes and plans a model.
fn plan(bytes: &[u8], outputs: &[&str]) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    if !outputs.is_empty() {
        model.select_outputs_by_name(outputs)?;
    }
    model.into_optimized()?.into_runnable()
}

/// Runs and returns the first output's shape and values.
fn run(plan: &Arc<TypedRunnableModel>, inputs: Vec<Tensor>) -> TractResult<(Vec<usize>, Vec<f32>)> {
    let out = plan.run(inputs.into_iter().map(|t| t.into_tvalue()).collect())?;
    let view = out[0].to_plain_array_view::<f32>()?;
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}

fn image(resolution: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let data: Vec<f32> = (0..3 * resolution * resolution)
        .map(|_| rng.uniform(-1.0, 1.0))
        .collect();
    Tensor::from_shape(&[1, 3, resolution, resolution], &data).unwrap()
}

fn std_dev(xs: &[f32]) -> f32 {
    let mean = xs.iter().sum::<f32>() / xs.len() as f32;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32).sqrt()
}

/// Finite, not constant, and of a sane magnitude.
fn assert_sane(what: &str, xs: &[f32]) {
    assert!(
        xs.iter().all(|x| x.is_finite()),
        "{what}: non-finite values"
    );
    let sd = std_dev(xs);
    let max = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("{what}: std {sd:.4}, max |x| {max:.4}");
    assert!(sd > 1e-3, "{what}: degenerate, std {sd}");
    assert!(max < 1e4, "{what}: exploding, max |x| {max}");
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits have the right shape, are sane, and depend on the image; the `embedding`
/// tensor can be selected by name and has shape [1, embedding].
fn check_cnn(
    name: &str,
    bytes: &[u8],
    resolution: usize,
    embedding: usize,
    classes: usize,
) -> TractResult<()> {
    let logits = plan(bytes, &[])?;
    let (shape, a) = run(&logits, vec![image(resolution, 1)])?;
    assert_eq!(shape, [1, classes], "{name} logits shape");
    assert_sane(&format!("{name} logits"), &a);
    let (_, b) = run(&logits, vec![image(resolution, 2)])?;
    assert!(
        max_abs_diff(&a, &b) > 1e-4,
        "{name}: logits do not depend on the input"
    );

    let emb = plan(bytes, &["embedding"])?;
    let (shape, e) = run(&emb, vec![image(resolution, 1)])?;
    assert_eq!(shape, [1, embedding], "{name} embedding shape");
    assert_sane(&format!("{name} embedding"), &e);
    let dead = e.iter().filter(|&&x| x <= 1e-6).count();
    eprintln!("{name} embedding: {dead}/{} channels at 0", e.len());
    assert!(
        dead < e.len() / 2,
        "{name}: most embedding channels are dead"
    );
    Ok(())
}

fn bert_inputs(cfg: &BertConfig, masked_tail: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    let ids: Vec<i64> = (0..cfg.seq_len)
        .map(|_| rng.below(cfg.vocab) as i64)
        .collect();
    let mask: Vec<i64> = (0..cfg.seq_len)
        .map(|i| (i + masked_tail < cfg.seq_len) as i64)
        .collect();
    vec![
        Tensor::from_shape(&[1, cfg.seq_len], &ids).unwrap(),
        Tensor::from_shape(&[1, cfg.seq_len], &mask).unwrap(),
    ]
}

#[test]
fn mobilenet_runs_in_tract_and_exposes_its_embedding() -> TractResult<()> {
    let cfg = small_mobilenet(7);
    check_cnn(
        "mobilenet",
        &testmodels::mobilenet(&cfg),
        cfg.resolution,
        cfg.embedding,
        cfg.classes,
    )
}

#[test]
fn resnet_runs_in_tract_and_exposes_its_embedding() -> TractResult<()> {
    let cfg = small_resnet(7);
    let embedding = cfg.stages.last().unwrap().0;
    check_cnn(
        "resnet",
        &testmodels::resnet(&cfg),
        cfg.resolution,
        embedding,
        cfg.classes,
    )
}

#[test]
fn bert_runs_in_tract_and_its_mask_is_wired() -> TractResult<()> {
    let cfg = small_bert(7);
    let model = plan(&testmodels::bert(&cfg), &[])?;
    let (shape, full) = run(&model, bert_inputs(&cfg, 0, 1))?;
    assert_eq!(shape, [1, cfg.seq_len, cfg.hidden]);
    assert_sane("bert last_hidden_state", &full);

    let (_, other_ids) = run(&model, bert_inputs(&cfg, 0, 2))?;
    assert!(
        max_abs_diff(&full, &other_ids) > 1e-3,
        "bert: output does not depend on input_ids"
    );

    // Masking the last 4 tokens changes what the first (unmasked) token attends to.
    let (_, masked) = run(&model, bert_inputs(&cfg, 4, 1))?;
    let first = |xs: &[f32]| xs[..cfg.hidden].to_vec();
    let d = max_abs_diff(&first(&full), &first(&masked));
    eprintln!("bert: masking 4 tokens moves token 0 by up to {d:.4}");
    assert!(d > 1e-3, "bert: attention_mask has no effect");
    Ok(())
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let pairs = [
        (
            "mobilenet",
            testmodels::mobilenet(&small_mobilenet(1)),
            testmodels::mobilenet(&small_mobilenet(1)),
            testmodels::mobilenet(&small_mobilenet(2)),
        ),
        (
            "resnet",
            testmodels::resnet(&small_resnet(1)),
            testmodels::resnet(&small_resnet(1)),
            testmodels::resnet(&small_resnet(2)),
        ),
        (
            "bert",
            testmodels::bert(&small_bert(1)),
            testmodels::bert(&small_bert(1)),
            testmodels::bert(&small_bert(2)),
        ),
    ];
    for (name, a, same, other) in pairs {
        assert!(a == same, "{name}: same seed, different bytes");
        assert!(a != other, "{name}: other seed, same bytes");
        assert_eq!(
            a.len(),
            other.len(),
            "{name}: the seed changes only the weights"
        );
    }
}

/// The default (bench-sized) models build, load, run, and report their sizes.
#[test]
fn default_models_run_in_tract() -> TractResult<()> {
    let m = testmodels::mobilenet(&MobileNetConfig::default());
    let (shape, logits) = run(&plan(&m, &[])?, vec![image(224, 3)])?;
    assert_eq!(shape, [1, 10]);
    assert_sane("default mobilenet logits", &logits);

    let r = testmodels::resnet(&ResNetConfig::default());
    let (shape, logits) = run(&plan(&r, &[])?, vec![image(224, 3)])?;
    assert_eq!(shape, [1, 10]);
    assert_sane("default resnet logits", &logits);

    let cfg = BertConfig {
        seq_len: 64,
        ..Default::default()
    };
    let b = testmodels::bert(&cfg);
    let (shape, hidden) = run(&plan(&b, &[])?, bert_inputs(&cfg, 8, 3))?;
    assert_eq!(shape, [1, 64, 64]);
    assert_sane("bert seq 64 last_hidden_state", &hidden);
    eprintln!(
        "sizes: mobilenet {} B, resnet {} B, bert(seq 64) {} B",
        m.len(),
        r.len(),
        b.len()
    );
    Ok(())
}

#[test]
fn write_creates_parent_directories() -> anyhow::Result<()> {
    let dir = testkit::scratch("testmodels");
    let path = dir.join("nested/model.onnx");
    let bytes = testmodels::bert(&BertConfig {
        layers: 1,
        ..small_bert(3)
    });
    testmodels::write(&path, &bytes)?;
    assert_eq!(std::fs::read(&path)?, bytes);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// ONNX Runtime needs what tract forgives: SSA (every tensor produced once, by a node or an
/// initializer), and the declared opset and IR version.
#[test]
fn models_are_ssa_with_opset_17_and_ir_8() {
    use prost::Message;
    use std::collections::HashSet;
    use tract_onnx::pb::ModelProto;
    let models = [
        ("mobilenet", testmodels::mobilenet(&small_mobilenet(1))),
        ("resnet", testmodels::resnet(&small_resnet(1))),
        ("bert", testmodels::bert(&small_bert(1))),
    ];
    for (name, bytes) in models {
        let model = ModelProto::decode(&bytes[..]).unwrap();
        assert_eq!(model.ir_version, testmodels::IR_VERSION);
        assert_eq!(model.opset_import.len(), 1);
        assert_eq!(
            (
                model.opset_import[0].domain.as_str(),
                model.opset_import[0].version
            ),
            ("", 17)
        );
        let graph = model.graph.unwrap();
        let mut defined: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        for t in graph.initializer.iter().map(|t| t.name.as_str()) {
            assert!(defined.insert(t), "{name}: {t} defined twice");
        }
        let mut nodes = HashSet::new();
        for node in &graph.node {
            assert!(
                nodes.insert(node.name.as_str()),
                "{name}: node {} twice",
                node.name
            );
            for i in &node.input {
                assert!(
                    defined.contains(i.as_str()),
                    "{name}: {i} used before it is defined"
                );
            }
            for o in &node.output {
                assert!(defined.insert(o.as_str()), "{name}: {o} defined twice");
            }
        }
        for o in &graph.output {
            assert!(
                defined.contains(o.name.as_str()),
                "{name}: output {} undefined",
                o.name
            );
        }
        if name != "bert" {
            let classifier = graph.node.iter().find(|n| n.name == "classifier").unwrap();
            assert_eq!(
                (classifier.op_type.as_str(), classifier.input[0].as_str()),
                ("Gemm", "embedding")
            );
            assert_eq!(classifier.output, ["logits"]);
        }
    }
}
