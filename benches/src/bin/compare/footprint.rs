//! Sizes of the device program and the firmware, and the firmware's run under QEMU, as
//! the JSON report's `sizes`.

use std::path::Path;
use std::time::Duration;

use benches::sizes;
use serde_json::{Value, json};

/// Sizes of the device program and the firmware, and the firmware's run under QEMU.
pub fn size_report(workspace: &Path, qemu_timeout: Duration) -> Value {
    let devices: Vec<Value> = sizes::devices(workspace)
        .into_iter()
        .map(|d| {
            json!({
                "target": d.target,
                "path": d.path,
                "bytes": d.bytes,
                "limit_bytes": sizes::DEVICE_LIMIT,
                "built": d.bytes.is_some(),
                "build": d.build,
            })
        })
        .collect();
    let path = sizes::firmware_path(workspace);
    let firmware = if !path.exists() {
        json!({ "path": path, "built": false, "build": sizes::FIRMWARE_BUILD })
    } else {
        match sizes::firmware(&path) {
            Err(e) => json!({ "path": path, "built": true, "error": format!("{e:#}") }),
            Ok(f) => {
                let qemu = if !sizes::on_path("qemu-system-arm") {
                    json!({ "run": false, "why": "qemu-system-arm is not on PATH" })
                } else {
                    eprintln!("compare: running the firmware under qemu-system-arm…");
                    match sizes::run_qemu(&path, qemu_timeout) {
                        Err(e) => json!({ "run": false, "why": format!("{e:#}") }),
                        Ok(r) => json!({
                            "run": true,
                            "command": format!("qemu-system-arm {}", sizes::qemu_args(&path).join(" ")),
                            "stack_peak_bytes": r.stack_peak,
                            "accuracy_before": r.accuracy_before.map(accuracy_json),
                            "accuracy_after": r.accuracy_after.map(accuracy_json),
                            "timeout_seconds": qemu_timeout.as_secs(),
                            "exit_code": r.exit_code,
                            "timed_out": r.timed_out,
                            "output_tail": r.tail,
                        }),
                    }
                };
                json!({
                    "path": path,
                    "built": true,
                    "flash_bytes": f.flash,
                    "ram_bytes": f.ram,
                    "flash_limit_bytes": sizes::FLASH_LIMIT,
                    "ram_limit_bytes": sizes::RAM_LIMIT,
                    "sections": f.sections.iter().map(|(n, s)| (n.clone(), json!(s))).collect::<serde_json::Map<_, _>>(),
                    "qemu": qemu,
                })
            }
        }
    };
    json!({ "device": devices, "firmware": firmware })
}

fn accuracy_json((percent, correct, total): (f64, u64, u64)) -> Value {
    json!({ "percent": percent, "correct": correct, "total": total })
}
