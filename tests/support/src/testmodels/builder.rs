//! [`Builder`]: a small ONNX graph builder over tract-onnx's protobuf types, one method per
//! operator the test models use.

use edgetune_core::rng::Rng;
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

use super::{DataType, IR_VERSION, OPSET};

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
