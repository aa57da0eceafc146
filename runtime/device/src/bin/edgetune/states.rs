//! `edgetune status`, `rollback` and `reset`: the state directory without a running
//! service. Rollback and reset write a new state (a copy of an earlier one, or one that
//! starts over from the bundle's head) and pin the state that was newest before them, so
//! that either can be undone.

use std::fmt::Display;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::{RollbackArgs, StatusArgs};
use edgetune_device::service::{Status, pin_newest_and_write, state_before_newest, state_numbered};
use edgetune_device::state::{DeviceState, Loaded, Origin, StateDir};

/// Runs `edgetune status`.
pub fn status(a: StatusArgs) -> Result<()> {
    let dir = StateDir::open(&a.state, false, 5)?;
    let on_disk: Vec<u64> = dir.list()?.into_iter().map(|(s, _)| s).collect();
    let Some((seq, state)) = newest(&dir)? else {
        say(
            a.json,
            json!({ "state_dir": a.state, "state": 0, "states_on_disk": [], "pinned": [] }),
            format_args!(
                "no state in {} yet: a device serving from it starts from the bundle's head",
                a.state.display()
            ),
        );
        return Ok(());
    };
    let status = Status::of(&a.state, seq, &state, on_disk, dir.pinned()?);
    if a.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

/// Runs `edgetune rollback`.
pub fn rollback(a: RollbackArgs) -> Result<()> {
    let mut dir = StateDir::open(&a.state, false, usize::MAX)?;
    dir.lock()?;
    let (from, mut state) = match a.to {
        Some(n) => state_numbered(&dir, n)?,
        None => state_before_newest(&dir)?,
    };
    state.origin = Origin::Rollback(from);
    let seq = pin_newest_and_write(&dir, &state)?;
    say(
        a.json,
        json!({ "state": seq, "copy_of": from }),
        format_args!(
            "state {seq} is now a copy of state {from}; a restarted `edgetune serve` continues from it (the state before is pinned)"
        ),
    );
    Ok(())
}

/// Runs `edgetune reset`.
pub fn reset(a: StatusArgs) -> Result<()> {
    let mut dir = StateDir::open(&a.state, false, usize::MAX)?;
    dir.lock()?;
    let backbone = newest(&dir)?.map(|(_, s)| s.backbone);
    let Some(backbone) = backbone else {
        say(
            a.json,
            json!({ "state": 0, "reset": false }),
            format_args!(
                "no state in {}: a device serving from it already starts from the bundle's head",
                a.state.display()
            ),
        );
        return Ok(());
    };
    let seq = pin_newest_and_write(&dir, &reset_state(backbone))?;
    say(
        a.json,
        json!({ "state": seq, "reset": true }),
        format_args!(
            "state {seq}: back to the bundle's head; the earlier states stay on disk, the last one pinned (`edgetune rollback --to N`)"
        ),
    );
    Ok(())
}

/// Prints `value` as JSON, or `text`.
fn say(json: bool, value: Value, text: impl Display) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Warns of each state file newer than the one loaded that was skipped, and why.
pub fn warn_skipped(l: &Loaded) {
    for (path, why) in &l.skipped {
        log::warn!(
            "state file {} is unusable ({why}); using {}",
            path.display(),
            l.path.display()
        );
    }
}

/// The newest readable state of a directory (no bundle at hand: every state that
/// decodes counts), with warnings for the newer ones skipped.
fn newest(dir: &StateDir) -> Result<Option<(u64, DeviceState)>> {
    let Some(l) = dir.load_newest(|_| Ok(()))? else {
        return Ok(None);
    };
    warn_skipped(&l);
    Ok(Some((l.seq, l.state)))
}

/// A state that starts over from the bundle's head on backbone `backbone`.
fn reset_state(backbone: u32) -> DeviceState {
    DeviceState {
        backbone,
        classes: Vec::new(),
        head: None,
        buffer: Default::default(),
        means: Vec::new(),
        guard: Default::default(),
        replay_rng: 0,
        counters: Default::default(),
        guard_accuracy: None,
        latency_us: Vec::new(),
        origin: Origin::Reset,
        learning: Default::default(),
        fleet: Default::default(),
    }
}
