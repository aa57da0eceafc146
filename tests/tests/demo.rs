//! End to end across the crates: the README's demo, as a user runs it, on the shipped
//! digits. Host training, shipping the head in the persistence format, a device that
//! learns five new digits from labels one at a time, persisting and reloading.

use std::path::Path;

use finetune_head::demo::{Options, run};

fn digits() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/digits.csv.gz")
}

#[test]
fn device_learns_new_digits_from_labels_without_forgetting_the_old() {
    let r = run(&digits(), &Options::default()).unwrap();
    println!("{r}");
    assert!(
        r.host_accuracy_old > 0.95,
        "host head: {}",
        r.host_accuracy_old
    );
    // Before any label the device can only be right on 0-4: about half the test set.
    assert!(r.before_all < 0.55, "before: {}", r.before_all);
    // 100 labels (20 per new digit) teach 5-9 and keep 0-4.
    assert!(r.after_new > 0.85, "new digits: {}", r.after_new);
    assert!(
        r.after_old > r.host_accuracy_old - 0.05,
        "old digits fell from {} to {}",
        r.host_accuracy_old,
        r.after_old
    );
    assert!(r.after_all > 0.90, "all digits: {}", r.after_all);
    assert_eq!(r.labels, 100);
}

#[test]
fn demo_is_deterministic_for_a_seed() {
    let a = run(
        &digits(),
        &Options {
            labels_per_class: 5,
            ..Options::default()
        },
    )
    .unwrap();
    let b = run(
        &digits(),
        &Options {
            labels_per_class: 5,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(
        (a.after_all, a.after_old, a.after_new),
        (b.after_all, b.after_old, b.after_new)
    );
}

#[test]
fn bad_data_is_a_clear_error() {
    let e = run(Path::new("/nonexistent/digits.csv"), &Options::default()).unwrap_err();
    assert!(
        format!("{e:#}").contains("cannot open /nonexistent/digits.csv"),
        "{e:#}"
    );
    let dir = std::env::temp_dir().join(format!("edgetune-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let narrow = dir.join("narrow.csv");
    std::fs::write(&narrow, "1,2,3,0\n").unwrap();
    let e = run(&narrow, &Options::default()).unwrap_err();
    assert!(
        format!("{e:#}").contains("expected 64 features per digit, found 3"),
        "{e:#}"
    );
}
