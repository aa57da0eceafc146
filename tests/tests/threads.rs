//! `Backbone::with_threads` (feature `threads`): the same embedding on two threads as on
//! the caller's, and a clear error for zero threads.

use edgetune::backbone::Backbone;
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, ResNetConfig};
use finetune_head::convert::{Options, convert};

#[test]
fn two_threads_embed_like_one() {
    let model = testkit::dir("threads").join("resnet.onnx");
    let cfg = ResNetConfig {
        resolution: 64,
        stem: 16,
        stages: vec![(32, 1), (64, 1)],
        ..Default::default()
    };
    testmodels::write(&model, &testmodels::resnet(&cfg)).unwrap();
    let (bundle, _) = convert(&model, &Options::default()).unwrap();
    let one = Backbone::from_bundle(&bundle).unwrap();
    let two = one.clone().with_threads(2).unwrap();
    for raw in testmodels::images(3, 64, 2) {
        let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
        one.embed(&raw, &mut a).unwrap();
        two.embed(&raw, &mut b).unwrap();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "one thread vs two: {diff}");
    }
    let e = one.with_threads(0).unwrap_err();
    assert!(e.to_string().contains("0 threads"), "{e}");
}
