//! Rollback: an earlier state made the newest again, as a new state file that copies it
//! (the state that was newest is pinned first, so a rollback can itself be undone). The
//! running service does it on request (`{"rollback": true}` or `{"rollback": N}`), and
//! `edgetune rollback` does it on a stopped device's directory, with the same functions.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{RUN_IDS, Service, ms, resume};
use crate::state::{self, DeviceState, Origin, StateDir};

impl Service {
    /// Rolls back to state `to` (`None`: the usable state before the newest). What is
    /// unwritten is written first, so that the state rolled back from stays on disk
    /// (pinned). The state must belong to this bundle; on any error nothing changes.
    pub fn rollback(&mut self, to: Option<u64>) -> anyhow::Result<Value> {
        let t0 = Instant::now();
        self.flush()?;
        let (from, mut copy) = match to {
            Some(n) => state_numbered(&self.dir, n)?,
            None => state_before_newest(&self.dir)?,
        };
        if copy.backbone != self.model.id {
            bail!("state {from} was learned on another backbone: it cannot be rolled back to");
        }
        copy.origin = Origin::Rollback(from);
        // Checked before anything is written: a state the engine cannot take changes
        // nothing.
        let loaded = state::Loaded {
            seq: 0,
            state: copy,
            path: self.dir.path().join(state::file_name(from)),
            skipped: Vec::new(),
        };
        let (mut engine, names, _, origin) = resume(&self.model, &loaded, self.opts.engine)?;
        // Ids above every id this run gave out: a label for a sample predicted before the
        // rollback is for an unknown sample, never for another one.
        let next = self.engine.counters().next_sample.div_ceil(RUN_IDS) * RUN_IDS;
        engine.start_ids_at(next.max(engine.counters().next_sample));
        let seq = pin_newest_and_write(&self.dir, &loaded.state)?;
        self.engine = engine;
        self.names = names;
        self.seq = seq;
        self.origin = origin;
        self.dirty = false;
        self.schedule.attempted(Instant::now(), true);
        log::info!("rolled back to state {from}: state {seq} is a copy of it");
        Ok(json!({
            "state": seq,
            "copy_of": from,
            "classes": self.names,
            "ms": { "total": ms(t0.elapsed()) },
        }))
    }
}

/// State `n` of the directory, which must be usable.
pub fn state_numbered(dir: &StateDir, n: u64) -> anyhow::Result<(u64, DeviceState)> {
    let files = dir.list()?;
    let path = files
        .iter()
        .find(|(s, _)| *s == n)
        .map(|(_, p)| p.clone())
        .with_context(|| {
            format!(
                "there is no state {n} in {} (states on disk: {:?})",
                dir.path().display(),
                files.iter().map(|(s, _)| s).collect::<Vec<_>>()
            )
        })?;
    let state = dir
        .read(n, &path)
        .map_err(|why| anyhow::anyhow!("state {n} is unusable: {why}"))?;
    Ok((n, state))
}

/// The newest usable state, then the usable one before it: the latter.
pub fn state_before_newest(dir: &StateDir) -> anyhow::Result<(u64, DeviceState)> {
    let files = dir.list()?;
    let mut usable = files
        .iter()
        .rev()
        .filter_map(|(s, p)| dir.read(*s, p).ok().map(|st| (*s, st)));
    let newest = usable
        .next()
        .context("there is no usable state to roll back from")?;
    usable.next().with_context(|| {
        format!(
            "state {} is the only usable state: there is nothing to roll back to",
            newest.0
        )
    })
}

/// Pins the newest state on disk (a rollback or reset can be undone), then writes
/// `state` as the newest; its sequence number.
pub fn pin_newest_and_write(dir: &StateDir, state: &DeviceState) -> anyhow::Result<u64> {
    if let Some((newest, _)) = dir.list()?.last() {
        dir.pin(*newest)?;
    }
    dir.write(state)
}
