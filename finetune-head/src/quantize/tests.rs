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
