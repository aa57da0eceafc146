//! Tests of the search methods.

use super::*;

fn toy_space() -> Space {
    Space::default()
        .with("lr", Param::LogUniform { lo: 1e-5, hi: 1e-1 })
        .with("wd", Param::Uniform { lo: 0.0, hi: 1.0 })
        .with(
            "opt",
            Param::Choice(vec!["sgd".into(), "adam".into(), "lion".into()]),
        )
}

/// Best at lr = 10^-2.5, wd = 0.3, opt = adam (score 0).
fn toy(p: &Point) -> f64 {
    let lr = p[0].as_f64().log10();
    let wd = p[1].as_f64();
    let opt_penalty = if p[2] == Value::Index(1) { 0.0 } else { 1.0 };
    -((lr + 2.5).powi(2) + (wd - 0.3).powi(2) + opt_penalty)
}

/// Distance to the optimum on the unit scales (a wrong option counts 1).
fn distance(space: &Space, p: &Point) -> f64 {
    let du = space.dims[0].1.position(p[0].as_f64()) - space.dims[0].1.position(10f64.powf(-2.5));
    let dw = p[1].as_f64() - 0.3;
    let dc = if p[2] == Value::Index(1) { 0.0 } else { 1.0 };
    (du * du + dw * dw + dc).sqrt()
}

#[test]
fn grid_covers_endpoints_and_fills_the_budget() {
    let space = toy_space();
    // 3 options fit; the reals share 40 / 3 = 13: 4 × 3 levels.
    let trials = run(&space, Method::Grid, 40, 1, 0, None, |_| (0.0, ()));
    assert_eq!(trials.len(), 36);
    assert_eq!(grid_levels(&space, 40), vec![4, 3, 3]);
    let lrs: Vec<f64> = trials.iter().map(|t| t.point[0].as_f64()).collect();
    assert_eq!(lrs.iter().copied().fold(f64::INFINITY, f64::min), 1e-5);
    assert_eq!(lrs.iter().copied().fold(0.0, f64::max), 1e-1);
    let mut distinct: Vec<f64> = lrs.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    // Evenly spaced on the log scale: 1e-5, 1e-5 · 10^(4/3), ...
    for (i, x) in distinct.iter().enumerate() {
        assert!((x.log10() - (-5.0 + 4.0 * i as f64 / 3.0)).abs() < 1e-12);
    }
    let wds: Vec<f64> = trials.iter().map(|t| t.point[1].as_f64()).collect();
    assert!(wds.contains(&0.0) && wds.contains(&0.5) && wds.contains(&1.0));
    for k in 0..3 {
        assert!(trials.iter().any(|t| t.point[2] == Value::Index(k)));
    }
    // First dimension slowest; every point distinct; indices in order.
    assert_eq!(
        trials[0].point,
        vec![Value::Real(1e-5), Value::Real(0.0), Value::Index(0)]
    );
    assert_eq!(trials[1].point[2], Value::Index(1));
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t.index, i);
        assert!(trials[..i].iter().all(|u| u.point != t.point));
    }
}

#[test]
fn grid_level_rules() {
    let reals = |n: usize| {
        (0..n).fold(Space::default(), |s, i| {
            s.with(format!("x{i}"), Param::Uniform { lo: 0.0, hi: 1.0 })
        })
    };
    assert_eq!(grid_levels(&reals(2), 7), vec![3, 2]);
    assert_eq!(grid_levels(&reals(2), 9), vec![3, 3]);
    assert_eq!(grid_levels(&reals(3), 30), vec![3, 3, 3]);
    assert_eq!(grid_levels(&reals(1), 1), vec![1]);
    // One level: the midpoint on its scale.
    let log = Space::default().with("lr", Param::LogUniform { lo: 1e-4, hi: 1.0 });
    let g = grid(&log, 1);
    assert!((g[0][0].as_f64() - 1e-2).abs() < 1e-15);
    // Options that do not all fit: reals get one level, options are shared out.
    let many = Space::default()
        .with("a", Param::Choice((0..4).map(|i| i.to_string()).collect()))
        .with("b", Param::Choice((0..5).map(|i| i.to_string()).collect()))
        .with("x", Param::Uniform { lo: 0.0, hi: 1.0 });
    assert_eq!(grid_levels(&many, 10), vec![3, 3, 1]);
    let g = grid(&many, 10);
    assert_eq!(g.len(), 9);
    let firsts: Vec<_> = g.iter().step_by(3).map(|p| p[0]).collect();
    assert_eq!(
        firsts,
        vec![Value::Index(0), Value::Index(2), Value::Index(3)]
    );
    assert!(g.iter().all(|p| p[2] == Value::Real(0.5)));
    // Only options, fewer than the budget: the grid runs once.
    let small = Space::default().with("a", Param::Choice(vec!["x".into(), "y".into()]));
    let trials = run(&small, Method::Grid, 10, 3, 0, None, |_| (0.0, ()));
    assert_eq!(trials.len(), 2);
    assert!(run(&small, Method::Grid, 0, 3, 0, None, |_| (0.0, ())).is_empty());
}

#[test]
fn random_points_are_within_bounds() {
    let space = toy_space();
    let trials = run(&space, Method::Random, 500, 4, 7, None, |p| (toy(p), ()));
    assert_eq!(trials.len(), 500);
    for t in &trials {
        space.check_point(&t.point).unwrap();
        assert!(matches!(t.point[0], Value::Real(_)) && matches!(t.point[2], Value::Index(_)));
    }
    // Uniform on the log scale: about a quarter of the draws per decade.
    let low = trials.iter().filter(|t| t.point[0].as_f64() < 1e-4).count();
    assert!((90..160).contains(&low), "{low} of 500 below 1e-4");
    for k in 0..3 {
        let n = trials
            .iter()
            .filter(|t| t.point[2] == Value::Index(k))
            .count();
        assert!((130..200).contains(&n), "option {k}: {n}");
    }
}

#[test]
fn runs_are_deterministic_whatever_the_threads() {
    let space = toy_space();
    let key = |trials: &[Trial<usize>]| -> Vec<(usize, Point, u64, usize)> {
        trials
            .iter()
            .map(|t| (t.index, t.point.clone(), t.score.to_bits(), t.extra))
            .collect()
    };
    for method in [Method::Grid, Method::Random] {
        let one = run(&space, method, 30, 1, 42, None, |p| (toy(p), p.len()));
        let two = run(&space, method, 30, 2, 42, None, |p| (toy(p), p.len()));
        let eight = run(&space, method, 30, 8, 42, None, |p| (toy(p), p.len()));
        assert_eq!(key(&one), key(&two), "{method}");
        assert_eq!(key(&one), key(&eight), "{method}");
    }
    let other = run(&space, Method::Random, 30, 1, 43, None, |p| (toy(p), 0));
    let one = run(&space, Method::Random, 30, 1, 42, None, |p| (toy(p), 0));
    assert_ne!(one[0].point, other[0].point);
    // Bayes: the same for the same thread count, whatever the timing.
    for threads in [1, 3] {
        let a = run(&space, Method::Bayes, 25, threads, 5, None, |p| (toy(p), 0));
        let b = run(&space, Method::Bayes, 25, threads, 5, None, |p| {
            // Uneven durations shuffle which worker finishes first.
            std::thread::sleep(std::time::Duration::from_micros(
                (p[1].as_f64() * 300.0) as u64,
            ));
            (toy(p), 0)
        });
        assert_eq!(key(&a), key(&b), "bayes, {threads} threads");
        assert_eq!(a.len(), 25);
    }
}

#[test]
fn first_point_is_trial_zero() {
    let space = toy_space();
    let default = vec![Value::Real(1e-3), Value::Real(0.01), Value::Index(2)];
    for method in [Method::Grid, Method::Random, Method::Bayes] {
        let trials = run(&space, method, 12, 3, 1, Some(default.clone()), |p| {
            (toy(p), ())
        });
        assert_eq!(trials[0].point, default, "{method}");
        assert_eq!(trials[0].index, 0);
        assert!(trials.len() <= 12, "{method}");
        if method != Method::Grid {
            assert_eq!(trials.len(), 12);
        }
    }
    // The grid gets the other 11: 3 options × 3 × 1 levels of the reals (11 / 3 = 3).
    let grid = run(
        &space,
        Method::Grid,
        12,
        1,
        0,
        Some(default.clone()),
        |_| (0.0, ()),
    );
    assert_eq!(grid.len(), 1 + 9);
    // An integer for a real reads as that number.
    let loose = vec![Value::Real(1e-3), Value::Index(0), Value::Index(2)];
    let trials = run(&space, Method::Random, 2, 1, 1, Some(loose), |p| {
        (toy(p), ())
    });
    assert_eq!(trials[0].point[1], Value::Real(0.0));
    // The default wins ties.
    let flat = run(
        &space,
        Method::Random,
        5,
        2,
        1,
        Some(default.clone()),
        |_| (1.0, ()),
    );
    assert_eq!(best(&flat).unwrap().index, 0);
}

#[test]
fn tpe_beats_random_and_concentrates_near_the_optimum() {
    let space = toy_space();
    let seeds = 20;
    let (mut best_tpe, mut best_random) = (0.0, 0.0);
    let (mut late_tpe, mut late_random) = (Vec::new(), Vec::new());
    for seed in 0..seeds {
        let tpe = run(&space, Method::Bayes, 40, 1, seed, None, |p| (toy(p), ()));
        let random = run(&space, Method::Random, 40, 1, seed, None, |p| (toy(p), ()));
        best_tpe += best(&tpe).unwrap().score / seeds as f64;
        best_random += best(&random).unwrap().score / seeds as f64;
        late_tpe.extend(tpe[20..].iter().map(|t| distance(&space, &t.point)));
        late_random.extend(random[20..].iter().map(|t| distance(&space, &t.point)));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (late_tpe, late_random) = (median(&mut late_tpe), median(&mut late_random));
    eprintln!(
        "best: tpe {best_tpe:.4}, random {best_random:.4}; late median distance: tpe {late_tpe:.3}, random {late_random:.3}"
    );
    assert!(
        best_tpe > best_random,
        "best: tpe {best_tpe}, random {best_random}"
    );
    assert!(
        late_tpe < 0.5 * late_random,
        "distance: tpe {late_tpe}, random {late_random}"
    );
}

#[test]
fn tpe_in_rounds_still_learns() {
    let space = toy_space();
    let (mut tpe, mut random) = (0.0, 0.0);
    for seed in 0..10 {
        let t = run(&space, Method::Bayes, 40, 4, seed, None, |p| (toy(p), ()));
        let r = run(&space, Method::Random, 40, 4, seed, None, |p| (toy(p), ()));
        // Points within a round differ.
        for round in t[8..].chunks(4) {
            for (i, a) in round.iter().enumerate() {
                assert!(round[..i].iter().all(|b| b.point != a.point));
            }
        }
        tpe += t[20..]
            .iter()
            .map(|t| distance(&space, &t.point))
            .sum::<f64>();
        r.iter()
            .skip(20)
            .for_each(|t| random += distance(&space, &t.point));
    }
    assert!(
        tpe < 0.7 * random,
        "mean late distance: tpe {tpe}, random {random}"
    );
}

#[test]
fn failed_trials_count_as_worst() {
    let space = toy_space();
    // Fails (NaN, or infinities) whenever lr > 1e-2: the search must steer away.
    let flaky = |p: &Point| {
        let lr = p[0].as_f64();
        if lr > 1e-2 {
            (if lr > 5e-2 { f64::NAN } else { f64::INFINITY }, ())
        } else {
            (toy(p), ())
        }
    };
    for method in [Method::Grid, Method::Random, Method::Bayes] {
        let trials = run(&space, method, 30, 2, 3, None, flaky);
        assert!(trials.len() <= 30 && !trials.is_empty());
        let b = best(&trials).unwrap();
        assert!(
            b.score.is_finite() && b.point[0].as_f64() <= 1e-2,
            "{method}"
        );
    }
    let bayes = run(&space, Method::Bayes, 40, 1, 3, None, flaky);
    let late_failures = bayes[20..].iter().filter(|t| !t.score.is_finite()).count();
    assert!(late_failures < 5, "{late_failures} late failures");
    // Everything failing: no best, no panic.
    let all = run(&space, Method::Bayes, 15, 2, 0, None, |_| (f64::NAN, ()));
    assert_eq!(all.len(), 15);
    assert!(best(&all).is_none());
}

#[test]
#[should_panic(expected = "objective failed at trial 3")]
fn a_panicking_objective_passes_its_panic_on() {
    let space = toy_space();
    let calls = AtomicUsize::new(0);
    run(&space, Method::Random, 50, 4, 0, None, |p| {
        let i = calls.fetch_add(1, Ordering::Relaxed);
        if i == 3 {
            panic!("objective failed at trial 3");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        (toy(p), ())
    });
}

#[test]
fn validate_rejects_bad_spaces() {
    assert!(toy_space().validate().is_ok());
    let bad = [
        Space::default(),
        Space::default().with("x", Param::Uniform { lo: 1.0, hi: 1.0 }),
        Space::default().with(
            "x",
            Param::Uniform {
                lo: 0.0,
                hi: f64::INFINITY,
            },
        ),
        Space::default().with("x", Param::LogUniform { lo: 0.0, hi: 1.0 }),
        Space::default().with("x", Param::Choice(vec![])),
        Space::default().with("x", Param::Choice(vec!["a".into(), "a".into()])),
        toy_space().with("lr", Param::Uniform { lo: 0.0, hi: 1.0 }),
        Space::default().with("", Param::Uniform { lo: 0.0, hi: 1.0 }),
    ];
    for space in bad {
        assert!(space.validate().is_err(), "{space:?}");
    }
    let space = toy_space();
    assert!(
        space
            .check_point(&vec![Value::Real(1e-3), Value::Real(0.5)])
            .is_err()
    );
    assert!(
        space
            .check_point(&vec![Value::Real(1.0), Value::Real(0.5), Value::Index(0)])
            .is_err()
    );
    assert!(
        space
            .check_point(&vec![Value::Real(1e-3), Value::Real(0.5), Value::Index(3)])
            .is_err()
    );
    assert!(
        space
            .check_point(&vec![Value::Real(1e-3), Value::Real(0.5), Value::Real(1.0)])
            .is_err()
    );
}

#[test]
fn describe_names_options_and_round_trips_json() {
    let space = toy_space();
    let point = vec![Value::Real(1e-3), Value::Real(0.25), Value::Index(1)];
    let d = space.describe(&point);
    assert_eq!(
        serde_json::Value::Object(d),
        serde_json::json!({"lr": 1e-3, "wd": 0.25, "opt": "adam"})
    );
    assert_eq!(space.real(&point, "wd"), Some(0.25));
    assert_eq!(space.choice(&point, "opt"), Some("adam"));
    assert_eq!(space.choice(&point, "lr"), None);
    assert_eq!(space.real(&point, "nope"), None);

    let json = serde_json::to_string(&space).unwrap();
    assert!(
        json.contains(r#"{"log_uniform":{"lo":0.00001,"hi":0.1}}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Space>(&json).unwrap(), space);
    let trial = Trial {
        index: 0,
        point: vec![Value::Real(2.0), Value::Real(1e-7), Value::Index(2)],
        score: 0.5,
        extra: "x".to_string(),
    };
    let back: Trial<String> =
        serde_json::from_str(&serde_json::to_string(&trial).unwrap()).unwrap();
    assert_eq!(back, trial);
    assert_eq!(serde_json::to_string(&Method::Bayes).unwrap(), r#""bayes""#);
    assert_eq!("TPE".parse::<Method>(), Ok(Method::Bayes));
    assert!("annealing".parse::<Method>().is_err());
}
