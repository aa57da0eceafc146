//! The report of an ONNX model: producer and opsets, inputs and outputs, operators, parameters, MACs, the embedding and classifier, quantization.

use super::*;

pub(super) fn onnx_report(file: String, len: usize, proto: &ModelProto) -> OnnxReport {
    let graph = proto.graph.as_ref().expect("checked by the caller");
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(tensor_info)
        .collect();
    let outputs = graph.output.iter().map(tensor_info).collect();

    let mut stats = GraphStats::default();
    count_graph(graph, &mut stats);
    match onnx_typed(proto) {
        Ok((model, fixed)) => {
            costs(&model, &mut stats);
            if stats.macs_note.is_none() && !fixed.is_empty() {
                stats.macs_note = Some(format!("with {}", fixed.join(", ")));
            }
        }
        Err(e) => stats.macs_note = Some(format!("tract cannot type the graph: {e:#}")),
    }

    let (embedding, embedding_note, classifier) = match find_embedding(proto, None) {
        Ok(e) => {
            let c = e.classifier.as_ref();
            let op = c.and_then(|c| {
                graph
                    .node
                    .iter()
                    .find(|n| n.name == c.node)
                    .map(|n| n.op_type.clone())
            });
            (
                c.map(|c| EmbeddingInfo {
                    tensor: e.tensor.clone(),
                    size: c.dim,
                }),
                None,
                c.map(|c| ClassifierInfo {
                    node: c.node.clone(),
                    op: op.unwrap_or_default(),
                    inputs: c.dim,
                    classes: c.classes,
                }),
            )
        }
        Err(e) => (None, Some(format!("{e:#}")), None),
    };
    let quantization = quantization(&stats.op_counts, &stats.parameters_by_dtype);
    OnnxReport {
        file,
        file_bytes: len as u64,
        producer: format!("{} {}", proto.producer_name, proto.producer_version)
            .trim()
            .to_string(),
        ir_version: proto.ir_version,
        opsets: proto
            .opset_import
            .iter()
            .map(|o| Opset {
                domain: o.domain.clone(),
                version: o.version,
            })
            .collect(),
        inputs,
        outputs,
        graph: stats,
        embedding,
        embedding_note,
        classifier,
        quantization,
    }
}

/// ONNX element type names in tract's spelling.
pub(super) fn dtype_name(code: i32) -> String {
    let Ok(dt) = DataType::try_from(code) else {
        return format!("type{code}");
    };
    match dt {
        DataType::Undefined => "?",
        DataType::Float => "f32",
        DataType::Uint8 => "u8",
        DataType::Int8 => "i8",
        DataType::Uint16 => "u16",
        DataType::Int16 => "i16",
        DataType::Int32 => "i32",
        DataType::Int64 => "i64",
        DataType::String => "string",
        DataType::Bool => "bool",
        DataType::Float16 => "f16",
        DataType::Double => "f64",
        DataType::Uint32 => "u32",
        DataType::Uint64 => "u64",
        DataType::Bfloat16 => "bf16",
        other => return other.as_str_name().to_lowercase(),
    }
    .to_string()
}

pub(super) fn tensor_info(v: &ValueInfoProto) -> TensorInfo {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let shape = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(v)) => Dim::Fixed(*v),
                        Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                        _ => Dim::Symbolic("?".into()),
                    })
                    .collect()
            });
            (dtype_name(t.elem_type), shape)
        }
        None => ("?".to_string(), None),
    };
    TensorInfo {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

pub(super) fn elements(dims: &[i64]) -> u64 {
    dims.iter()
        .map(|&d| u64::try_from(d).unwrap_or(0))
        .product()
}

pub(super) fn add_param(stats: &mut GraphStats, dtype: String, n: u64) {
    stats.parameters += n;
    *stats.parameters_by_dtype.entry(dtype).or_default() += n;
}

pub(super) fn add_tensor(stats: &mut GraphStats, t: &TensorProto) {
    add_param(stats, dtype_name(t.data_type), elements(&t.dims));
}

/// The operator's name: its type, prefixed by its domain outside the default one.
pub(super) fn op_name(n: &NodeProto) -> String {
    match n.domain.as_str() {
        "" | "ai.onnx" => n.op_type.clone(),
        d => format!("{d}.{}", n.op_type),
    }
}

/// Operators and parameters of `graph` and of the subgraphs of its nodes (If, Loop...).
pub(super) fn count_graph(graph: &GraphProto, stats: &mut GraphStats) {
    for t in &graph.initializer {
        add_tensor(stats, t);
    }
    for s in &graph.sparse_initializer {
        if let Some(v) = &s.values {
            add_tensor(stats, v);
        }
    }
    for n in &graph.node {
        if n.op_type == "Constant" && n.domain.is_empty() {
            // A Constant node is a parameter, not work.
            for a in &n.attribute {
                match a.name.as_str() {
                    "value" => a.t.iter().for_each(|t| add_tensor(stats, t)),
                    "sparse_value" => {
                        if let Some(v) = a.sparse_tensor.as_ref().and_then(|s| s.values.as_ref()) {
                            add_tensor(stats, v);
                        }
                    }
                    "value_float" => add_param(stats, "f32".into(), 1),
                    "value_floats" => add_param(stats, "f32".into(), a.floats.len() as u64),
                    "value_int" => add_param(stats, "i64".into(), 1),
                    "value_ints" => add_param(stats, "i64".into(), a.ints.len() as u64),
                    "value_string" => add_param(stats, "string".into(), 1),
                    "value_strings" => add_param(stats, "string".into(), a.strings.len() as u64),
                    _ => {}
                }
            }
            continue;
        }
        stats.nodes += 1;
        *stats.op_counts.entry(op_name(n)).or_default() += 1;
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                count_graph(g, stats);
            }
        }
    }
}

/// The model typed and decluttered by tract, with a symbolic batch fixed to 1; also the
/// dimensions that were fixed (`batch=1`).
pub(super) fn onnx_typed(proto: &ModelProto) -> Result<(TypedModel, Vec<String>)> {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(proto)?;
    let graph = proto.graph.as_ref().context("no graph")?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let declared: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let mut fixed = Vec::new();
    for (ix, input) in declared.iter().enumerate() {
        let Some(TypeValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let (Some(shape), Some(dt)) = (
            t.shape.as_ref(),
            model.input_fact(ix)?.datum_type.concretize(),
        ) else {
            continue;
        };
        let mut dims: Vec<TDim> = Vec::new();
        for (axis, d) in shape.dim.iter().enumerate() {
            dims.push(match d.value.as_ref() {
                Some(DimValue::DimValue(v)) if *v > 0 => (*v).to_dim(),
                Some(DimValue::DimParam(p)) if axis == 0 => {
                    if !fixed
                        .iter()
                        .any(|f: &String| f.starts_with(&format!("{p}=")))
                    {
                        fixed.push(format!("{p}=1"));
                    }
                    1.to_dim()
                }
                _ if axis == 0 => {
                    if !fixed.iter().any(|f| f == "batch=1") {
                        fixed.push("batch=1".into());
                    }
                    1.to_dim()
                }
                Some(DimValue::DimParam(p)) if !p.is_empty() => {
                    model.symbols.sym(p.as_str()).into()
                }
                _ => model.symbols.new_with_prefix("unk").into(),
            });
        }
        model.set_input_fact(ix, TypedFact::dt_shape(dt, dims).into())?;
    }
    Ok((model.into_typed()?.into_decluttered()?, fixed))
}

/// Operators whose FMA cost counts as MACs: convolutions and matrix products.
pub(super) fn is_linear(op: &str) -> bool {
    matches!(op, "Conv" | "Deconv" | "EinSum") || op.contains("MatMul") || op.contains("Matmul")
}

/// tract's cost model over a typed graph: MACs of linear operators and other FMAs.
pub(super) fn costs(model: &TypedModel, stats: &mut GraphStats) {
    let run = || -> Result<(TDim, TDim, BTreeMap<String, TDim>)> {
        let (mut linear, mut other) = (0.to_dim(), 0.to_dim());
        let mut by_op: BTreeMap<String, TDim> = BTreeMap::new();
        for id in model.eval_order()? {
            let node = model.node(id);
            let inputs = model.node_input_facts(id)?;
            let name = node.op.name().to_string();
            let cost = node
                .op
                .cost(&inputs)
                .with_context(|| format!("cost of node {:?} ({name})", node.name))?;
            for (kind, n) in cost {
                if !matches!(kind, Cost::FMA(_)) {
                    continue;
                }
                if is_linear(&name) {
                    linear += n.clone();
                    *by_op.entry(name.clone()).or_insert_with(|| 0.to_dim()) += n;
                } else {
                    other += n;
                }
            }
        }
        Ok((linear, other, by_op))
    };
    match run() {
        Ok((linear, other, by_op)) => {
            let linear = linear.simplify();
            match linear.to_i64() {
                Ok(v) => {
                    stats.macs = u64::try_from(v).ok();
                    stats.macs_by_op = by_op
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, u64::try_from(v.to_i64().ok()?).ok()?)))
                        .collect();
                }
                Err(_) => {
                    stats.macs_note = Some(format!("MACs depend on symbolic dimensions: {linear}"))
                }
            }
            stats.other_fma = other
                .simplify()
                .to_i64()
                .ok()
                .and_then(|v| u64::try_from(v).ok());
        }
        Err(e) => stats.macs_note = Some(format!("tract's cost model failed: {e:#}")),
    }
}

/// The quantization state from operator counts and parameter types.
pub(super) fn quantization(
    ops: &BTreeMap<String, usize>,
    params: &BTreeMap<String, u64>,
) -> QuantizationInfo {
    const QDQ: &str = "QDQ (QuantizeLinear/DequantizeLinear)";
    const QOP: &str = "QOperator (QLinearConv/QLinearMatMul/…)";
    const INT: &str = "integer ops (ConvInteger/MatMulInteger)";
    let class = |op: &str| -> Option<&'static str> {
        let op = op.rsplit('.').next().unwrap_or(op);
        match op {
            "QuantizeLinear" | "DequantizeLinear" => Some(QDQ),
            "ConvInteger"
            | "MatMulInteger"
            | "DynamicQuantizeLinear"
            | "MatMulIntegerToFloat"
            | "DynamicQuantizeMatMul" => Some(INT),
            "QGemm" | "QAttention" | "QEmbedLayerNormalization" => Some(QOP),
            _ if op.starts_with("QLinear") => Some(QOP),
            _ => None,
        }
    };
    let mut found: Vec<&'static str> = Vec::new();
    let mut counts = BTreeMap::new();
    for (op, n) in ops {
        if let Some(c) = class(op) {
            counts.insert(op.clone(), *n);
            if !found.contains(&c) {
                found.push(c);
            }
        }
    }
    // A fixed order: QDQ, QOperator, integer.
    found.sort_by_key(|c| [QDQ, QOP, INT].iter().position(|x| x == c));
    let state = match found.as_slice() {
        [] => {
            let f16 =
                params.get("f16").copied().unwrap_or(0) + params.get("bf16").copied().unwrap_or(0);
            if f16 > params.get("f32").copied().unwrap_or(0) {
                "f16".to_string()
            } else {
                "f32".to_string()
            }
        }
        [one] => one.to_string(),
        many => format!("mixed: {}", many.join(" + ")),
    };
    QuantizationInfo { state, ops: counts }
}
