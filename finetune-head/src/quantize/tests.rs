use super::*;

#[test]
fn activation_scales_are_symmetric() {
    assert_eq!(i8_params(-1.0, 3.0), 3.0 / 127.0);
    assert_eq!(i8_params(-4.0, 2.0), 4.0 / 127.0);
    // A constant zero tensor gets a harmless scale.
    assert_eq!(i8_params(0.0, 0.0), 1.0);
}

#[test]
fn weights_are_symmetric_per_channel() {
    let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0, -2.0, 2.0, 1.0];
    let (q, s) = quantize_weights(&w, 3);
    assert_eq!(s, vec![1.0 / 127.0, 1.0, 2.0 / 127.0]);
    assert_eq!(&q[..3], &[127, -64, 32]);
    assert_eq!(&q[3..6], &[0, 0, 0]);
    assert_eq!(&q[6..], &[-127, 127, 64]);
}

#[test]
fn weights_per_tensor_share_one_scale() {
    let (q, s) = quantize_weights_per_tensor(&[1.0, -0.5, 0.0, -2.0]);
    assert_eq!(s, 2.0 / 127.0);
    assert_eq!(q, vec![64, -32, 0, -127]);
    assert_eq!(quantize_weights_per_tensor(&[0.0, 0.0]), (vec![0, 0], 1.0));
}

/// a → Relu → b → c, b → Add; d reads x too and feeds the output.
#[test]
fn chains_are_convolutions_read_only_by_int8_convolutions() {
    use tract_onnx::pb::{GraphProto, ValueInfoProto};
    let graph = GraphProto {
        node: vec![
            node("Conv", "a", &["x", "wa"], "ya", Vec::new()),
            node("Relu", "r", &["ya"], "ra", Vec::new()),
            node("Conv", "b", &["ra", "wb"], "yb", Vec::new()),
            node("Conv", "c", &["yb", "wc"], "yc", Vec::new()),
            node("Add", "add", &["yb", "yc"], "sum", Vec::new()),
            node("Conv", "d", &["x", "wd"], "yd", Vec::new()),
            node("Conv", "e", &["yd", "we"], "emb", Vec::new()),
        ],
        output: vec![ValueInfoProto {
            name: "sum".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let chosen: HashSet<usize> = [0, 2, 3, 5, 6].into();
    let found = chains(&graph, &chosen, "emb");
    let mut keys: Vec<_> = found.keys().copied().collect();
    keys.sort();
    // a through its Relu, d directly; b feeds an Add, c the output, e is the embedding.
    assert_eq!(keys, vec![0, 5]);
    assert_eq!(found[&0].output, "ra");
    assert_eq!(found[&0].relu, Some(1));
    assert_eq!(found[&5].output, "yd");
    assert_eq!(found[&5].relu, None);
    // A reader that is not chosen (kept f32) breaks the chain.
    assert!(!chains(&graph, &[0, 3, 5, 6].into(), "emb").contains_key(&0));
}

#[test]
fn matrix_weights_are_symmetric_per_column() {
    // [k = 2, n = 3]: columns (1, -2), (0.5, 0), (0, 0).
    let w = [1.0, 0.5, 0.0, -2.0, 0.0, 0.0];
    let (q, s) = quantize_columns(&w, 2, 3);
    assert_eq!(s, vec![2.0 / 127.0, 0.5 / 127.0, 1.0]);
    assert_eq!(q, vec![64, 127, 0, -127, 0, 0]);
}

/// x → Q/DQ (u8, zero point 128) → Conv (weights DQ per channel) → Q/DQ (u8, zero point
/// 0) → Add, twice, to the output.
fn qdq_model(q_scale: f32) -> ModelProto {
    use tract_onnx::pb::{AttributeProto, GraphProto, ValueInfoProto};
    let u8_scalar = |name: &str, v: u8| TensorProto {
        name: name.into(),
        data_type: tract_onnx::pb::tensor_proto::DataType::Uint8 as i32,
        raw_data: vec![v],
        ..Default::default()
    };
    let axis = AttributeProto {
        name: "axis".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![
            node(
                "DequantizeLinear",
                "dqw",
                &["w_q", "w_s", "w_z"],
                "w",
                vec![axis],
            ),
            node(
                "QuantizeLinear",
                "qx",
                &["x", "x_s", "x_z"],
                "x_q",
                Vec::new(),
            ),
            node(
                "DequantizeLinear",
                "dqx",
                &["x_q", "x_s", "x_z"],
                "x_dq",
                Vec::new(),
            ),
            node("Conv", "conv", &["x_dq", "w"], "y", Vec::new()),
            node(
                "QuantizeLinear",
                "qy",
                &["y", "y_s", "y_z"],
                "y_q",
                Vec::new(),
            ),
            node(
                "DequantizeLinear",
                "dqy",
                &["y_q", "y_s", "y_z"],
                "y_dq",
                Vec::new(),
            ),
            node("Add", "add", &["y_dq", "y_dq"], "out", Vec::new()),
        ],
        initializer: vec![
            i8_tensor("w_q", &[2, 1, 1, 1], &[10, -20]),
            f32_tensor("w_s", &[2], &[0.5, 0.25]),
            i8_tensor("w_z", &[2], &[0, 0]),
            f32_tensor("x_s", &[], &[0.1]),
            u8_scalar("x_z", 128),
            f32_tensor("y_s", &[], &[q_scale]),
            u8_scalar("y_z", 0),
        ],
        output: vec![ValueInfoProto {
            name: "out".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    ModelProto {
        graph: Some(graph),
        ..Default::default()
    }
}

#[test]
fn a_qdq_model_goes_back_to_f32_with_its_quantizers_ranges() {
    let mut model = qdq_model(0.02);
    let qdq = strip_qdq(&mut model).unwrap().unwrap();
    assert_eq!(
        (qdq.pairs, qdq.constants, qdq.clips, qdq.left),
        (2, 1, 1, 0)
    );
    // u8 with zero point 128 at scale 0.1: [-12.8, 12.7]; zero point 0: [0, 5.1].
    let (lo, hi) = qdq.ranges["x"];
    assert!(
        (lo + 12.8).abs() < 1e-5 && (hi - 12.7).abs() < 1e-5,
        "{lo} {hi}"
    );
    let (lo, hi) = qdq.ranges["y.qdq_clip"];
    assert!(lo == 0.0 && (hi - 5.1).abs() < 1e-5, "{lo} {hi}");
    let graph = model.graph.as_ref().unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Conv", "Clip", "Add"]);
    // The convolution reads the model's input; the Add reads the clipped output.
    assert_eq!(graph.node[0].input, ["x", "w"]);
    assert_eq!(graph.node[2].input, ["y.qdq_clip", "y.qdq_clip"]);
    // The weights, dequantized per output channel.
    let w = graph.initializer.iter().find(|t| t.name == "w").unwrap();
    assert_eq!(floats(w).unwrap(), (vec![2, 1, 1, 1], vec![5.0, -5.0]));
    // And the Clip counts as a Relu where a chain drops it.
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    assert!(relu_like(&graph.node[1], &inits));
}

#[test]
fn a_model_without_quantizers_is_left_alone_and_a_bad_scale_is_named() {
    let mut model = qdq_model(0.02);
    strip_qdq(&mut model).unwrap();
    let before = model.clone();
    assert_eq!(strip_qdq(&mut model).unwrap(), None);
    assert_eq!(model, before);

    let e = strip_qdq(&mut qdq_model(0.0)).unwrap_err().to_string();
    assert!(
        e.contains("\"qy\"") && e.contains("not a positive number"),
        "{e}"
    );
}

/// Scales and biases rounded to 11 significant bits under one power of two: tiny
/// scales keep them (f16 alone would make them subnormal), and a tensor whose range
/// does not fit stays as it was.
#[test]
fn scales_and_biases_round_to_f16_precision() {
    let scales = [3e-7f32, 1.5e-6, 2e-5, 4.1e-4];
    let rounded = f16_precision(&scales, true);
    assert_ne!(rounded, scales, "rounded");
    let e = edgetune::nnef::f16_exponent(&scales);
    for (r, s) in rounded.iter().zip(&scales) {
        assert!((r - s).abs() <= s * 2f32.powi(-11), "{r} for {s}");
        let h = tract_onnx::prelude::f16::from_f32(r * edgetune::nnef::pow2(e));
        assert!(h.is_normal(), "{r}: normal in f16 times 2^{e}");
        assert_eq!(h.to_f32() * edgetune::nnef::pow2(-e), *r, "exactly an f16");
    }
    // Eight decades: the smallest would be subnormal. A scale keeps f32; a bias,
    // whose error counts absolutely, is rounded.
    let wide = [1e-9f32, 0.5];
    assert_eq!(f16_precision(&wide, true), wide);
    assert_ne!(f16_precision(&wide, false), wide);
    assert_eq!(f16_precision(&[0.0, 0.0], true), [0.0, 0.0]);
}
