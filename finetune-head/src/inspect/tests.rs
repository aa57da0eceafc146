//! Tests of `inspect`.

use super::display::*;
use super::*;

#[test]
fn numbers_and_dates() {
    assert_eq!(grouped(0), "0");
    assert_eq!(grouped(999), "999");
    assert_eq!(grouped(1000), "1,000");
    assert_eq!(grouped(1234567), "1,234,567");
    assert_eq!(short(12_345_678), "12.35 M");
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
}

#[test]
fn quantization_states() {
    let ops = |names: &[&str]| names.iter().map(|n| (n.to_string(), 2)).collect();
    let none = BTreeMap::new();
    assert_eq!(quantization(&ops(&["Conv"]), &none).state, "f32");
    let q = quantization(&ops(&["Conv", "QuantizeLinear", "DequantizeLinear"]), &none);
    assert_eq!(q.state, "QDQ (QuantizeLinear/DequantizeLinear)");
    assert_eq!(q.ops.len(), 2);
    let q = quantization(&ops(&["QLinearConv", "com.microsoft.QGemm"]), &none);
    assert!(q.state.starts_with("QOperator"));
    let q = quantization(&ops(&["MatMulInteger", "DequantizeLinear"]), &none);
    assert_eq!(
        q.state,
        "mixed: QDQ (QuantizeLinear/DequantizeLinear) + integer ops (ConvInteger/MatMulInteger)"
    );
    let f16 = [("f16".to_string(), 10)].into_iter().collect();
    assert_eq!(quantization(&ops(&["Conv"]), &f16).state, "f16");
}
