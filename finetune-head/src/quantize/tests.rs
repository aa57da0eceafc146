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
