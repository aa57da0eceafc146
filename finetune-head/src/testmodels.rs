//! Test models that the project builds itself (issue 3): nothing is downloaded and no model
//! binary is committed. A small ONNX graph builder over tract-onnx's protobuf types
//! ([`Builder`]) and three generators that return ONNX bytes, deterministic for a seed:
//!
//! - [`mobilenet`]: MobileNetV2-style (conv, BatchNormalization, ReLU6 as Clip, depthwise
//!   conv, inverted residuals, GlobalAveragePool, Gemm classifier);
//! - [`resnet`]: ResNet-style basic blocks (7×7 stem, MaxPool, 1×1 strided shortcuts);
//! - [`bert`]: a BERT-style encoder (embeddings, multi-head attention with a mask,
//!   LayerNormalization, Erf-based GELU), output `last_hidden_state`.
//!
//! The CNNs name their classifier Gemm node `classifier` and the tensor feeding it
//! `embedding`, their output `logits`. Every model declares opset [`OPSET`] and IR version
//! [`IR_VERSION`], which both tract 0.23.9 and ONNX Runtime 1.32 accept.
//!
//! The weights are random, scaled so that activations keep a sane range (He scaling before
//! ReLU/ReLU6, LeCun scaling elsewhere, BatchNormalization close to identity: mean ≈ 0,
//! var ≈ 1, gamma ≈ 1 with small noise). These nets compute nothing meaningful; they have
//! the operators, shapes and costs of the real ones.
//!
//! ```
//! use finetune_head::testmodels::{self, Builder, DataType, MobileNetConfig};
//!
//! let cnn = testmodels::mobilenet(&MobileNetConfig { resolution: 96, ..Default::default() });
//! // A graph of your own: a linear classifier over a 16-wide feature.
//! let mut g = Builder::new("linear", 42);
//! let x = g.input("embedding", DataType::Float, &[1, 16]);
//! let y = g.gemm("classifier", &x, 16, 3);
//! g.output(&y, "logits", DataType::Float, &[1, 3]);
//! let bytes = g.finish();
//! # assert!(cnn.len() > bytes.len());
//! # use tract_onnx::prelude::*;
//! # tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap().into_optimized().unwrap();
//! ```

use std::path::Path;

use anyhow::Context;
use edgetune::rng::Rng;
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
/// Element types of inputs, outputs and constants.
pub use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

/// The ONNX operator set the generated models import (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// The ONNX IR version the generated models declare.
pub const IR_VERSION: i64 = 8;

/// A node attribute for [`Builder::node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Builds one ONNX graph. Every method that adds an operator takes the node's name, uses
/// the same name for its output tensor (`{name}.weight`, `{name}.bias`... for its
/// parameters) and returns that output name, so graphs read like code.
pub struct Builder {
    graph: GraphProto,
    rng: Rng,
}

impl Builder {
    /// An empty graph named `name` whose random parameters come from `seed`.
    pub fn new(name: &str, seed: u64) -> Self {
        let graph = GraphProto {
            name: name.into(),
            ..Default::default()
        };
        Builder {
            graph,
            rng: Rng::new(seed),
        }
    }

    /// The generator that initializes parameters, for custom ones.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DataType, dims: &[i64]) -> String {
        self.graph.input.push(value_info(name, dtype, dims));
        name.into()
    }

    /// Renames `tensor` to `name` everywhere and declares it a graph output.
    pub fn output(&mut self, tensor: &str, name: &str, dtype: DataType, dims: &[i64]) {
        for node in &mut self.graph.node {
            for t in node.input.iter_mut().chain(node.output.iter_mut()) {
                if t == tensor {
                    *t = name.into();
                }
            }
        }
        self.graph.output.push(value_info(name, dtype, dims));
    }

    /// A constant f32 tensor.
    pub fn constant(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
        let raw_data = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, DataType::Float, dims, raw_data)
    }

    /// A constant i64 tensor (shapes, axes).
    pub fn constant_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
        let raw_data = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, DataType::Int64, dims, raw_data)
    }

    /// A rank-0 f32 constant.
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        self.constant(name, &[], &[value])
    }

    /// A parameter drawn uniformly from `center ± bound`.
    pub fn uniform(&mut self, name: &str, dims: &[i64], center: f32, bound: f32) -> String {
        let n = dims.iter().product::<i64>() as usize;
        let data: Vec<f32> = (0..n)
            .map(|_| center + self.rng.uniform(-bound, bound))
            .collect();
        self.constant(name, dims, &data)
    }

    /// A weight `{name}.weight` with LeCun scaling (variance 1/fan_in).
    pub fn weight(&mut self, name: &str, dims: &[i64], fan_in: usize) -> String {
        self.uniform(
            &format!("{name}.weight"),
            dims,
            0.0,
            (3.0 / fan_in as f32).sqrt(),
        )
    }

    /// Adds a node with one output named `name`; returns `name`.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        let attribute = attrs.iter().map(|(n, a)| attribute(n, a)).collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.into()],
            name: name.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        name.into()
    }

    /// A bias-free convolution with k×k kernels (padding k/2), He-initialized.
    pub fn conv(
        &mut self,
        name: &str,
        x: &str,
        cin: usize,
        out: usize,
        k: usize,
        s: usize,
    ) -> String {
        self.grouped_conv(name, x, cin, out, k, s, 1)
    }

    /// A bias-free depthwise convolution (group = channels) with k×k kernels (padding k/2).
    pub fn depthwise(&mut self, name: &str, x: &str, c: usize, k: usize, stride: usize) -> String {
        self.grouped_conv(name, x, c, c, k, stride, c)
    }

    #[allow(clippy::too_many_arguments)]
    fn grouped_conv(
        &mut self,
        name: &str,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        group: usize,
    ) -> String {
        let (k, pad, fan_in) = (k as i64, (k / 2) as i64, (cin / group * k * k) as f32);
        let dims = [cout as i64, (cin / group) as i64, k, k];
        let w = self.uniform(&format!("{name}.weight"), &dims, 0.0, (6.0 / fan_in).sqrt());
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![stride as i64; 2])),
            ("pads", Attr::Ints(vec![pad; 4])),
            ("group", Attr::Int(group as i64)),
        ];
        self.node("Conv", name, &[x, &w], &attrs)
    }

    /// BatchNormalization over `c` channels, close to the identity (inference statistics).
    pub fn bn(&mut self, name: &str, x: &str, c: usize) -> String {
        self.bn_gamma(name, x, c, 1.0)
    }

    /// [`Builder::bn`] with gamma ≈ `gamma`. Below 1 on the BN that closes a residual
    /// branch, it keeps the sum's variance from doubling at every block, as a trained
    /// network's statistics would.
    pub fn bn_gamma(&mut self, name: &str, x: &str, c: usize, gamma: f32) -> String {
        let d = [c as i64];
        let gamma = self.uniform(&format!("{name}.weight"), &d, gamma, 0.1 * gamma);
        let beta = self.uniform(&format!("{name}.bias"), &d, 0.0, 0.1);
        let mean = self.uniform(&format!("{name}.running_mean"), &d, 0.0, 0.1);
        let var = self.uniform(&format!("{name}.running_var"), &d, 1.0, 0.1);
        let attrs = [("epsilon", Attr::Float(1e-5))];
        self.node(
            "BatchNormalization",
            name,
            &[x, &gamma, &beta, &mean, &var],
            &attrs,
        )
    }

    pub fn relu(&mut self, name: &str, x: &str) -> String {
        self.node("Relu", name, &[x], &[])
    }

    /// Clip with min and max as inputs (opset ≥ 11); `clip(.., 0.0, 6.0)` is ReLU6.
    pub fn clip(&mut self, name: &str, x: &str, min: f32, max: f32) -> String {
        let lo = self.scalar(&format!("{name}.min"), min);
        let hi = self.scalar(&format!("{name}.max"), max);
        self.node("Clip", name, &[x, &lo, &hi], &[])
    }

    pub fn add(&mut self, name: &str, a: &str, b: &str) -> String {
        self.node("Add", name, &[a, b], &[])
    }

    pub fn mul(&mut self, name: &str, a: &str, b: &str) -> String {
        self.node("Mul", name, &[a, b], &[])
    }

    pub fn matmul(&mut self, name: &str, a: &str, b: &str) -> String {
        self.node("MatMul", name, &[a, b], &[])
    }

    pub fn max_pool(&mut self, name: &str, x: &str, k: usize, stride: usize) -> String {
        let (k, s, p) = (k as i64, stride as i64, (k / 2) as i64);
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![s, s])),
            ("pads", Attr::Ints(vec![p; 4])),
        ];
        self.node("MaxPool", name, &[x], &attrs)
    }

    pub fn global_avg_pool(&mut self, name: &str, x: &str) -> String {
        self.node("GlobalAveragePool", name, &[x], &[])
    }

    /// Flatten to [N, rest].
    pub fn flatten(&mut self, name: &str, x: &str) -> String {
        self.node("Flatten", name, &[x], &[("axis", Attr::Int(1))])
    }

    /// A fully connected layer as Gemm with weight [out, in] (transB = 1, PyTorch's layout).
    pub fn gemm(&mut self, name: &str, x: &str, fan_in: usize, out: usize) -> String {
        let w = self.weight(name, &[out as i64, fan_in as i64], fan_in);
        let b = self.uniform(&format!("{name}.bias"), &[out as i64], 0.0, 0.1);
        self.node("Gemm", name, &[x, &w, &b], &[("transB", Attr::Int(1))])
    }

    /// A linear layer as MatMul (node `{name}.matmul`, weight [in, out]) + Add (node `name`).
    pub fn linear(&mut self, name: &str, x: &str, fan_in: usize, out: usize) -> String {
        let w = self.weight(name, &[fan_in as i64, out as i64], fan_in);
        let b = self.uniform(&format!("{name}.bias"), &[out as i64], 0.0, 0.1);
        let y = self.matmul(&format!("{name}.matmul"), x, &w);
        self.add(name, &y, &b)
    }

    /// LayerNormalization (opset 17) over the last axis of width `dim`.
    pub fn layer_norm(&mut self, name: &str, x: &str, dim: usize) -> String {
        let gamma = self.uniform(&format!("{name}.weight"), &[dim as i64], 1.0, 0.1);
        let beta = self.uniform(&format!("{name}.bias"), &[dim as i64], 0.0, 0.1);
        let attrs = [("axis", Attr::Int(-1)), ("epsilon", Attr::Float(1e-12))];
        self.node("LayerNormalization", name, &[x, &gamma, &beta], &attrs)
    }

    /// GELU as 0.5·x·(1 + Erf(x/√2)), the form ONNX Runtime fuses and tract imports.
    pub fn gelu(&mut self, name: &str, x: &str) -> String {
        let sqrt2 = self.scalar(&format!("{name}.sqrt2"), std::f32::consts::SQRT_2);
        let one = self.scalar(&format!("{name}.one"), 1.0);
        let half = self.scalar(&format!("{name}.half"), 0.5);
        let t = self.node("Div", &format!("{name}.div"), &[x, &sqrt2], &[]);
        let t = self.node("Erf", &format!("{name}.erf"), &[&t], &[]);
        let t = self.add(&format!("{name}.add"), &t, &one);
        let t = self.mul(&format!("{name}.mul"), x, &t);
        self.mul(name, &t, &half)
    }

    pub fn reshape(&mut self, name: &str, x: &str, shape: &[i64]) -> String {
        let s = self.constant_i64(&format!("{name}.shape"), &[shape.len() as i64], shape);
        self.node("Reshape", name, &[x, &s], &[])
    }

    pub fn transpose(&mut self, name: &str, x: &str, perm: &[i64]) -> String {
        let perm = Attr::Ints(perm.to_vec());
        self.node("Transpose", name, &[x], &[("perm", perm)])
    }

    pub fn softmax(&mut self, name: &str, x: &str, axis: i64) -> String {
        self.node("Softmax", name, &[x], &[("axis", Attr::Int(axis))])
    }

    /// The model, encoded.
    pub fn finish(self) -> Vec<u8> {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "edgetune".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn initializer(&mut self, name: &str, ty: DataType, dims: &[i64], raw_data: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: ty as i32,
            name: name.into(),
            raw_data,
            ..Default::default()
        });
        name.into()
    }
}

fn value_info(name: &str, dtype: DataType, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: dtype as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attribute(name: &str, attr: &Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    match attr {
        Attr::Int(i) => (a.r#type, a.i) = (AttributeType::Int as i32, *i),
        Attr::Ints(v) => (a.r#type, a.ints) = (AttributeType::Ints as i32, v.clone()),
        Attr::Float(f) => (a.r#type, a.f) = (AttributeType::Float as i32, *f),
    }
    a
}

/// Writes model bytes to `path`, creating its parent directories.
pub fn write(path: impl AsRef<Path>, bytes: &[u8]) -> anyhow::Result<()> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// One MobileNetV2 inverted-residual block (channel counts before the width multiplier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvertedResidual {
    /// Expansion ratio of the 1×1 expand conv (1: no expand conv).
    pub expand: usize,
    /// Output channels.
    pub out: usize,
    /// Stride of the depthwise conv (1 or 2).
    pub stride: usize,
}

/// Shape of the MobileNet-style model.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileNetConfig {
    /// Input height and width.
    pub resolution: usize,
    /// Width multiplier applied to `stem` and every block's channels (rounded to 8).
    pub width: f32,
    /// Channels of the 3×3 stride-2 stem conv.
    pub stem: usize,
    pub blocks: Vec<InvertedResidual>,
    /// Width of the embedding (the final 1×1 conv, pooled), not scaled by `width`.
    pub embedding: usize,
    pub classes: usize,
    pub seed: u64,
}

impl Default for MobileNetConfig {
    /// MobileNetV2's first four stages (down to 1/16 of the resolution) at 224×224,
    /// a 256-wide embedding and 10 classes.
    fn default() -> Self {
        let b = |expand, out, stride| InvertedResidual {
            expand,
            out,
            stride,
        };
        MobileNetConfig {
            resolution: 224,
            width: 1.0,
            stem: 32,
            blocks: vec![
                b(1, 16, 1),
                b(6, 24, 2),
                b(6, 24, 1),
                b(6, 32, 2),
                b(6, 32, 1),
                b(6, 64, 2),
                b(6, 64, 1),
                b(6, 96, 1),
            ],
            embedding: 256,
            classes: 10,
            seed: 0,
        }
    }
}

fn scaled(c: usize, width: f32) -> usize {
    (((c as f32 * width / 8.0).round() as usize) * 8).max(8)
}

/// A MobileNetV2-style classifier: input `input` [1, 3, R, R] (NCHW f32), output `logits`
/// [1, classes]; the Gemm node `classifier` reads the tensor `embedding` [1, embedding].
pub fn mobilenet(cfg: &MobileNetConfig) -> Vec<u8> {
    let mut g = Builder::new("mobilenet", cfg.seed);
    let r = cfg.resolution as i64;
    let x = g.input("input", DataType::Float, &[1, 3, r, r]);
    let mut c = scaled(cfg.stem, cfg.width);
    let x = g.conv("stem.conv", &x, 3, c, 3, 2);
    let x = g.bn("stem.bn", &x, c);
    let mut x = g.clip("stem.relu6", &x, 0.0, 6.0);
    for (i, blk) in cfg.blocks.iter().enumerate() {
        let p = format!("block{i}");
        let out = scaled(blk.out, cfg.width);
        let hidden = c * blk.expand;
        let mut h = x.clone();
        if blk.expand != 1 {
            h = g.conv(&format!("{p}.expand.conv"), &h, c, hidden, 1, 1);
            h = g.bn(&format!("{p}.expand.bn"), &h, hidden);
            h = g.clip(&format!("{p}.expand.relu6"), &h, 0.0, 6.0);
        }
        h = g.depthwise(&format!("{p}.dw.conv"), &h, hidden, 3, blk.stride);
        h = g.bn(&format!("{p}.dw.bn"), &h, hidden);
        h = g.clip(&format!("{p}.dw.relu6"), &h, 0.0, 6.0);
        h = g.conv(&format!("{p}.project.conv"), &h, hidden, out, 1, 1);
        h = g.bn(&format!("{p}.project.bn"), &h, out);
        x = if blk.stride == 1 && c == out {
            g.add(&format!("{p}.add"), &x, &h)
        } else {
            h
        };
        c = out;
    }
    let x = g.conv("head.conv", &x, c, cfg.embedding, 1, 1);
    let x = g.bn("head.bn", &x, cfg.embedding);
    let x = g.clip("head.relu6", &x, 0.0, 6.0);
    let x = g.global_avg_pool("pool", &x);
    let x = g.flatten("embedding", &x);
    let y = g.gemm("classifier", &x, cfg.embedding, cfg.classes);
    g.output(&y, "logits", DataType::Float, &[1, cfg.classes as i64]);
    g.finish()
}

/// Shape of the ResNet-style model.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Input height and width.
    pub resolution: usize,
    /// Channels of the 7×7 stride-2 stem conv.
    pub stem: usize,
    /// (channels, basic blocks) per stage; every stage after the first starts with stride 2.
    /// The last stage's channels are the embedding width.
    pub stages: Vec<(usize, usize)>,
    pub classes: usize,
    pub seed: u64,
}

impl Default for ResNetConfig {
    /// ResNet-18's topology at half width (embedding 256) at 224×224, 10 classes.
    fn default() -> Self {
        ResNetConfig {
            resolution: 224,
            stem: 32,
            stages: vec![(32, 2), (64, 2), (128, 2), (256, 2)],
            classes: 10,
            seed: 0,
        }
    }
}

/// A ResNet-style classifier (basic blocks): input `input` [1, 3, R, R], output `logits`;
/// the Gemm node `classifier` reads `embedding` [1, last stage's channels].
pub fn resnet(cfg: &ResNetConfig) -> Vec<u8> {
    let mut g = Builder::new("resnet", cfg.seed);
    let r = cfg.resolution as i64;
    let x = g.input("input", DataType::Float, &[1, 3, r, r]);
    let mut c = cfg.stem;
    let x = g.conv("stem.conv", &x, 3, c, 7, 2);
    let x = g.bn("stem.bn", &x, c);
    let x = g.relu("stem.relu", &x);
    let mut x = g.max_pool("stem.pool", &x, 3, 2);
    for (s, &(out, blocks)) in cfg.stages.iter().enumerate() {
        for b in 0..blocks {
            let p = format!("stage{s}.block{b}");
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let h = g.conv(&format!("{p}.conv1"), &x, c, out, 3, stride);
            let h = g.bn(&format!("{p}.bn1"), &h, out);
            let h = g.relu(&format!("{p}.relu1"), &h);
            let h = g.conv(&format!("{p}.conv2"), &h, out, out, 3, 1);
            let h = g.bn_gamma(&format!("{p}.bn2"), &h, out, 0.5);
            let shortcut = if stride != 1 || c != out {
                let d = g.conv(&format!("{p}.downsample.conv"), &x, c, out, 1, stride);
                g.bn_gamma(&format!("{p}.downsample.bn"), &d, out, 0.5)
            } else {
                x.clone()
            };
            let y = g.add(&format!("{p}.add"), &h, &shortcut);
            x = g.relu(&format!("{p}.relu2"), &y);
            c = out;
        }
    }
    let x = g.global_avg_pool("pool", &x);
    let x = g.flatten("embedding", &x);
    let y = g.gemm("classifier", &x, c, cfg.classes);
    g.output(&y, "logits", DataType::Float, &[1, cfg.classes as i64]);
    g.finish()
}

/// Shape of the BERT-style encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab: usize,
    /// Sequence length (the inputs' fixed second dimension).
    pub seq_len: usize,
    pub hidden: usize,
    /// Attention heads; must divide `hidden`.
    pub heads: usize,
    pub layers: usize,
    /// Width of the feed-forward block.
    pub ffn: usize,
    pub seed: u64,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab: 1000,
            seq_len: 16,
            hidden: 64,
            heads: 4,
            layers: 2,
            ffn: 256,
            seed: 0,
        }
    }
}

/// A BERT-style encoder: inputs `input_ids` and `attention_mask` [1, S] (i64), output
/// `last_hidden_state` [1, S, hidden]. Masked positions (mask 0) get a -1e4 attention bias.
pub fn bert(cfg: &BertConfig) -> Vec<u8> {
    assert!(
        cfg.heads > 0 && cfg.hidden.is_multiple_of(cfg.heads),
        "heads must divide hidden"
    );
    let mut g = Builder::new("bert", cfg.seed);
    let (s, h, nh) = (cfg.seq_len as i64, cfg.hidden as i64, cfg.heads as i64);
    let dh = h / nh;
    let ids = g.input("input_ids", DataType::Int64, &[1, s]);
    let mask = g.input("attention_mask", DataType::Int64, &[1, s]);

    // Embeddings: token lookup plus a learned position table, normalized.
    let table = g.weight("embeddings.word", &[cfg.vocab as i64, h], 1);
    let axis0 = [("axis", Attr::Int(0))];
    let x = g.node("Gather", "embeddings.word", &[&table, &ids], &axis0);
    let pos = g.weight("embeddings.position", &[s, h], 4);
    let x = g.add("embeddings.add", &x, &pos);
    let mut x = g.layer_norm("embeddings.ln", &x, cfg.hidden);

    // Attention bias from the mask: (1 - mask) · -1e4, as [1, 1, 1, S].
    let to_f32 = [("to", Attr::Int(DataType::Float as i64))];
    let m = g.node("Cast", "mask.cast", &[&mask], &to_f32);
    let one = g.scalar("mask.one", 1.0);
    let m = g.node("Sub", "mask.invert", &[&one, &m], &[]);
    let big = g.scalar("mask.big", -1e4);
    let m = g.mul("mask.scaled", &m, &big);
    let axes = g.constant_i64("mask.axes", &[2], &[1, 2]);
    let bias = g.node("Unsqueeze", "mask.bias", &[&m, &axes], &[]);

    for l in 0..cfg.layers {
        let p = format!("layer{l}");
        let heads = |g: &mut Builder, name: &str, perm: &[i64]| {
            let t = g.linear(&format!("{p}.attn.{name}"), &x, cfg.hidden, cfg.hidden);
            let t = g.reshape(&format!("{p}.attn.{name}.split"), &t, &[1, s, nh, dh]);
            g.transpose(&format!("{p}.attn.{name}.heads"), &t, perm)
        };
        let q = heads(&mut g, "q", &[0, 2, 1, 3]); // [1, nh, S, dh]
        let k = heads(&mut g, "k", &[0, 2, 3, 1]); // [1, nh, dh, S]
        let v = heads(&mut g, "v", &[0, 2, 1, 3]); // [1, nh, S, dh]
        let scores = g.matmul(&format!("{p}.attn.scores"), &q, &k);
        let scale = g.scalar(&format!("{p}.attn.scale.value"), 1.0 / (dh as f32).sqrt());
        let scores = g.mul(&format!("{p}.attn.scale"), &scores, &scale);
        let scores = g.add(&format!("{p}.attn.masked"), &scores, &bias);
        let probs = g.softmax(&format!("{p}.attn.probs"), &scores, -1);
        let ctx = g.matmul(&format!("{p}.attn.context"), &probs, &v);
        let ctx = g.transpose(&format!("{p}.attn.context.merge"), &ctx, &[0, 2, 1, 3]);
        let ctx = g.reshape(&format!("{p}.attn.context.flat"), &ctx, &[1, s, h]);
        let o = g.linear(&format!("{p}.attn.out"), &ctx, cfg.hidden, cfg.hidden);
        let o = g.add(&format!("{p}.attn.residual"), &o, &x);
        let a = g.layer_norm(&format!("{p}.attn.ln"), &o, cfg.hidden);
        let f = g.linear(&format!("{p}.ffn.in"), &a, cfg.hidden, cfg.ffn);
        let f = g.gelu(&format!("{p}.ffn.gelu"), &f);
        let f = g.linear(&format!("{p}.ffn.out"), &f, cfg.ffn, cfg.hidden);
        let f = g.add(&format!("{p}.ffn.residual"), &f, &a);
        x = g.layer_norm(&format!("{p}.ffn.ln"), &f, cfg.hidden);
    }
    g.output(&x, "last_hidden_state", DataType::Float, &[1, s, h]);
    g.finish()
}

/// `n` smooth random RGB images of `side`×`side`, raw pixels 0–255 in NCHW order
/// (colour gradients with noise rather than white noise, so a network's activations
/// look more like an image's): calibration and benchmark inputs for the test models.
pub fn images(n: usize, side: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut img = vec![0.0f32; 3 * side * side];
            for c in 0..3 {
                let (fx, fy, ph) = (rng.unit() * 6.0, rng.unit() * 6.0, rng.unit() * 6.3);
                let (base, amp) = (rng.unit() * 128.0 + 64.0, rng.unit() * 60.0);
                for y in 0..side {
                    for x in 0..side {
                        let u = (x as f32 * fx + y as f32 * fy) / side as f32;
                        let v = base + amp * (u + ph).sin() + (rng.unit() - 0.5) * 20.0;
                        img[(c * side + y) * side + x] = v.clamp(0.0, 255.0).floor();
                    }
                }
            }
            img
        })
        .collect()
}
