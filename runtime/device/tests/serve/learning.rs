//! Learning through `serve`: a new class learned from labels and kept across a restart,
//! and bursts of labels written once per persist interval.

use serde_json::json;

use crate::{Serve, case, sample, status};

#[test]
fn learns_a_new_class_and_a_restart_continues() {
    let (_, model, state, mut rng) = case("learn", 4, 1);
    let mut s = Serve::start(&model, &state, &["--persist-interval", "0"]);
    // Class "c" lives on axis 2: unknown to the bundle.
    let before = s.predict(&sample(2, &mut rng));
    assert_ne!(before["class"], "c");
    for i in 0..8 {
        let p = s.predict(&sample(2, &mut rng));
        let a = s.label("c", &p["sample"]);
        assert!(a.get("error").is_none(), "{a}");
        assert_eq!(a["added"], i == 0, "{a}");
        assert!(a["persisted"].is_u64(), "{a}");
        // An old class keeps being labeled too.
        let p = s.predict(&sample(0, &mut rng));
        s.label("a", &p["sample"]);
    }
    let hits = (0..20)
        .filter(|_| s.predict(&sample(2, &mut rng))["class"] == "c")
        .count();
    assert!(hits >= 18, "new class recognised {hits}/20");
    let old = (0..20)
        .filter(|_| s.predict(&sample(0, &mut rng))["class"] == "a")
        .count();
    assert!(old >= 18, "old class kept {old}/20");
    let live = s.ask(r#"{"status": true}"#);
    s.stop();

    // Restart: the same classes, counts and head.
    let st = status(&state);
    assert_eq!(st["labels"], 16);
    assert_eq!(st["updates"], live["updates"]);
    // This bundle's head comes with neither statistics nor exemplars of its classes:
    // the gradient learner. 15 of the 16 labels were for a class the head had (the
    // first "c" added it), each measured by the prediction made before it.
    assert_eq!(st["learner"], "gradient", "{st}");
    assert_eq!(st["prequential_labels"], 15, "{st}");
    assert!(st["prequential_accuracy"].as_f64().unwrap() > 0.5, "{st}");
    let (t, t_live) = (st["temperature"].as_f64(), live["temperature"].as_f64());
    assert!((t.unwrap() - t_live.unwrap()).abs() < 1e-6, "{st} {live}");
    let names: Vec<&str> = st["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    let mut s = Serve::start(&model, &state, &[]);
    let p = s.predict(&sample(2, &mut rng));
    assert_eq!(p["class"], "c", "{p}");
    // A label for a sample from before the restart is refused, not misapplied.
    let a = s.label("a", &json!(3));
    assert!(
        a["error"].as_str().unwrap().contains("unknown sample id 3"),
        "{a}"
    );
    s.stop();
    assert_eq!(
        status(&state)["state"],
        st["state"],
        "nothing learned, nothing written"
    );
}

#[test]
fn bursts_of_labels_make_few_writes() {
    let (_, model, state, mut rng) = case("burst", 4, 6);
    let mut s = Serve::start(&model, &state, &["--persist-interval", "30"]);
    let mut persisted = 0;
    for _ in 0..20 {
        let p = s.predict(&sample(0, &mut rng));
        persisted += usize::from(s.label("a", &p["sample"])["persisted"].is_u64());
    }
    // The first label writes at once; the other 19 wait for the interval, and stopping
    // writes them.
    assert_eq!(persisted, 1);
    s.stop();
    let st = status(&state);
    assert_eq!(
        (st["state"].as_u64(), st["labels"].as_u64()),
        (Some(2), Some(20))
    );
}
