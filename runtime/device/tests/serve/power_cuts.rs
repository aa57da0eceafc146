//! What a power cut leaves: `serve` killed at random moments keeps a complete state, and
//! a damaged or truncated newest state falls back to the one before it.

use std::time::{Duration, Instant};

use edgetune_device::state;
use serde_json::json;

use crate::{Serve, case, sample, serve_to_end, status};

/// Runs serve, streams predictions and labels, and kills it (SIGKILL) after a random
/// delay; afterwards the newest state must load and be exactly the state after some
/// number of labels, no fewer than the labels acknowledged as written. `EDGETUNE_KILLS`
/// sets the number of kills (200 by default; more for a long run).
#[test]
fn killed_at_random_moments_it_keeps_a_complete_state() {
    let kills: usize = std::env::var("EDGETUNE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (_, model, state, mut rng) = case("kill", 8, 3);
    let mut labels_done = 0u64; // labels in the newest state after the previous run
    let mut lost_max = 0;
    let (mut unacked_write, mut torn) = (0, 0);
    for k in 0..kills {
        let mut s = Serve::start(&model, &state, &["--persist-interval", "0", "--keep", "3"]);
        let delay = Duration::from_micros(rng.below(40_000) as u64);
        let start = Instant::now();
        let mut acked = labels_done; // labels whose answer said "persisted"
        let mut sent = labels_done;
        let class = ["a", "b", "c", "d"];
        while start.elapsed() < delay {
            let c = rng.below(4);
            s.send(&json!({ "tensor": sample(c, &mut rng) }).to_string());
            let Some(p) = s.answer() else { break };
            s.send(&json!({ "label": class[c], "sample": p["sample"] }).to_string());
            sent += 1;
            let Some(a) = s.answer() else { break };
            assert!(a["persisted"].is_u64(), "{a}");
            acked = sent;
        }
        // Requests in flight when the process dies: a few predictions and labels (of
        // the most recent sample) sent without waiting, then the kill a moment later,
        // often in the middle of a write.
        for _ in 0..=rng.below(4) {
            let c = rng.below(4);
            s.send(&json!({ "tensor": sample(c, &mut rng) }).to_string());
            s.send(&json!({ "label": class[c] }).to_string());
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000) as u64));
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        let st = status(&state);
        let labels = st["labels"].as_u64().unwrap();
        assert!(
            labels >= acked && labels <= sent,
            "kill {k}: the state holds {labels} labels; {acked} were acknowledged, {sent} sent"
        );
        lost_max = lost_max.max(sent - labels);
        unacked_write += usize::from(labels > acked);
        // Every label writes one state: the state's number tells how many labels it
        // holds, so it is the complete state after exactly that many.
        labels_done = labels;
        if labels > 0 {
            assert_eq!(
                st["state"].as_u64().unwrap(),
                labels,
                "kill {k}: state number and labels"
            );
        }
        let on_disk = st["states_on_disk"].as_array().unwrap().len();
        // A kill between a write and the deletion of the oldest leaves one extra.
        assert!(on_disk <= 4, "kill {k}: {on_disk} states kept, --keep 3");
        let leftovers = std::fs::read_dir(&state)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert!(leftovers <= 1, "kill {k}: {leftovers} temporary files");
        torn += leftovers;
    }
    println!(
        "{kills} kills: {labels_done} labels kept; {torn} killed mid-write (a temporary file left), \
         {unacked_write} after a write completed but before its answer"
    );
    assert!(labels_done > 0, "no label was ever written in {kills} runs");
    println!("at most {lost_max} unacknowledged labels lost in one kill");
}

#[test]
fn every_damaged_or_truncated_newest_state_falls_back_to_the_previous() {
    let (_, model, state, mut rng) = case("damage", 3, 4);
    let mut s = Serve::start(&model, &state, &["--persist-interval", "0"]);
    for c in [0, 1, 0] {
        let p = s.predict(&sample(c, &mut rng));
        s.label(["a", "b"][c], &p["sample"]);
    }
    s.stop();
    let newest = state.join(state::file_name(3));
    let good = std::fs::read(&newest).unwrap();
    let serve_once = || {
        let (ok, _, err) = serve_to_end(&model, &state, &[]);
        (ok, err)
    };
    let check = |what: &str, bytes: &[u8]| {
        std::fs::write(&newest, bytes).unwrap();
        let (ok, err) = serve_once();
        assert!(ok, "{what}: {err}");
        assert!(
            err.contains("state-0000000003.bin is unusable") && err.contains("from state 2 "),
            "{what}: {err}"
        );
    };
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0xA5;
        check(&format!("byte {i} damaged"), &bad);
    }
    for n in 0..good.len() {
        check(&format!("cut to {n} bytes"), &good[..n]);
    }
    std::fs::write(&newest, &good).unwrap();
    let (ok, err) = serve_once();
    assert!(
        ok && err.contains("from state 3 ") && !err.contains("unusable"),
        "{err}"
    );
}
