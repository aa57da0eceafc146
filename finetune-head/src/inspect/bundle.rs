//! The report of a bundle: header, sections, manifest, the backbone as the device loads it, the head.

use super::*;

pub(super) fn bundle_report(file: String, bytes: &[u8], bundle: Bundle) -> BundleReport {
    // from_bytes checked the header and the section table.
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let len_at = |section: usize| {
        let at = MAGIC.len() + 2 + section * 16 + 8;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    debug_assert!(bytes.len() >= HEADER_LEN);
    // Inflated once, for its size and for the graph's statistics.
    let tar = edgetune::nnef::nnef_tar(&bundle.backbone);
    let sections = Sections {
        manifest: len_at(0),
        backbone: len_at(1),
        backbone_inflated: match &tar {
            Ok(tar) if edgetune::nnef::is_gzipped(&bundle.backbone) => Some(tar.len() as u64),
            _ => None,
        },
        head: len_at(2),
    };
    let (backbone, backbone_note) = match bundle.manifest.backbone.format {
        BackboneFormat::None => (None, Some("no backbone: the input is the embedding".into())),
        BackboneFormat::NnefTar => match tar.and_then(|tar| nnef_stats(&tar)) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("cannot load the NNEF backbone: {e:#}"))),
        },
    };
    // The bundle validated its head: decoding it again cannot fail.
    let head = bundle.head.as_deref().and_then(|h| head_info(h).ok());
    BundleReport {
        file,
        file_bytes: bytes.len() as u64,
        format_version: u16_at(MAGIC.len()),
        sections,
        manifest: bundle.manifest,
        backbone,
        backbone_note,
        head,
    }
}

pub(super) fn datum_name(dt: DatumType) -> String {
    let name = |dt: DatumType| format!("{dt:?}").to_lowercase();
    if dt.is_quantized() {
        format!("q{}", name(dt.unquantized()))
    } else {
        name(dt)
    }
}

/// The backbone (an NNEF tar, or a gzipped one) loaded as a device loads it
/// ([`edgetune::nnef::read_model`]), then decluttered: the loader wires helper nodes
/// (casts of constants, reshapes) that the device's plan folds away.
pub(super) fn nnef_stats(tar: &[u8]) -> Result<GraphStats> {
    let model = edgetune::nnef::read_model(tar)?.into_decluttered()?;
    let mut stats = GraphStats::default();
    for node in model.nodes() {
        if let Some(k) = node.op_as::<Const>() {
            let v = k.val();
            add_param(&mut stats, datum_name(v.datum_type()), v.len() as u64);
        } else if !model.input_outlets()?.iter().any(|o| o.node == node.id) {
            stats.nodes += 1;
            *stats
                .op_counts
                .entry(node.op.name().to_string())
                .or_default() += 1;
        }
    }
    costs(&model, &mut stats);
    Ok(stats)
}

pub(super) fn head_info(bytes: &[u8]) -> Result<HeadInfo> {
    let header = persist::read_header(bytes)?;
    let mut head = persist::decode_head(bytes)?;
    let dims = head.dims();
    let optimizer = match header.optimizer {
        1 => Some(("SGD with momentum", Optimizer::SGD_MOMENTUM)),
        2 => Some(("Adam", Optimizer::ADAM)),
        3 => Some(("AdamW", Optimizer::ADAMW)),
        _ => None,
    };
    // The step count lives in the payload: decode again into a learner of the stored
    // kind (plain SGD when no optimizer state is stored) to read it.
    let cfg = Config {
        optimizer: optimizer.map_or(
            Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            |(_, o)| o,
        ),
        ..Config::DEFAULT
    };
    let mut learner = Learner::alloc(dims, cfg)?;
    persist::decode_into(bytes, &mut head, Some(&mut learner))?;
    Ok(HeadInfo {
        kind: match dims.kind() {
            HeadKind::Linear => "linear",
            HeadKind::Mlp { .. } => "mlp",
        }
        .into(),
        input: dims.input,
        hidden: dims.hidden,
        classes: head.classes(),
        capacity: dims.capacity,
        parameters: dims.param_len(),
        optimizer_state: optimizer.map(|(n, _)| n.to_string()),
        steps: learner.steps(),
    })
}
