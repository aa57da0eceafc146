//! Embeddings of a data set, computed once: with the bundle's backbone on all cores
//! (one loaded graph shared by the threads), with a progress bar, and cached on disk.
//!
//! The cache is one file per backbone in the cache folder (`--cache DIR`, by default
//! `$XDG_CACHE_HOME/edgetune` or `~/.cache/edgetune`), named by the backbone's hash
//! ([`backbone_id`]: the backbone's bytes, its input and its preprocessing). Each record
//! is a key, the SHA-256 of (backbone hash, sample content hash — a text's token ids —,
//! variant), and the
//! embedding. A second `train` with other hyperparameters finds every embedding there
//! and embeds nothing ([`Stats::computed`] = 0); another backbone, another file or another
//! augmentation misses and is computed.
//!
//! Records are appended; a record cut short by a crash, or a file that is not a cache of
//! this backbone, is ignored (and a bad file replaced), so the cache can only cost time,
//! never give a wrong embedding.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use edgetune::backbone::Backbone;
use edgetune::bundle::{BackboneFormat, Bundle};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::augment::{self, Augment};
use crate::dataset::{Hash, Input, Item};

const MAGIC: &[u8; 8] = b"ETEMBC01";
const HEADER: usize = 16;

/// The hash that names a backbone in the cache: its bytes, its input spec and its
/// preprocessing, i.e. everything that decides an embedding.
pub fn backbone_id(bundle: &Bundle) -> Hash {
    let m = &bundle.manifest;
    let mut h = Sha256::new();
    h.update(b"edgetune-embedding-v1");
    h.update(serde_json::to_vec(&m.input).unwrap_or_default());
    h.update(serde_json::to_vec(&m.preprocess).unwrap_or_default());
    h.update(serde_json::to_vec(&m.pooling).unwrap_or_default());
    h.update(serde_json::to_vec(&m.embedding).unwrap_or_default());
    h.update(&bundle.backbone);
    h.finalize().into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default number of threads: all cores (1 if that cannot be told).
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The default cache folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("edgetune");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("edgetune");
    }
    PathBuf::from(".edgetune-cache")
}

/// The on-disk embedding cache of one backbone.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    dim: usize,
    map: HashMap<Hash, Vec<f32>>,
    /// True when the file must be rewritten whole (missing or unusable).
    fresh: bool,
    new: Vec<(Hash, Vec<f32>)>,
}

impl Cache {
    /// Opens (or prepares) the cache of backbone `id` with `dim`-wide embeddings in `dir`.
    pub fn open(dir: &Path, id: &Hash, dim: usize) -> Cache {
        let path = dir.join(format!("{}.emb", hex(&id[..16])));
        let mut cache = Cache {
            path,
            dim,
            map: HashMap::new(),
            fresh: true,
            new: Vec::new(),
        };
        let Ok(bytes) = fs::read(&cache.path) else {
            return cache;
        };
        if bytes.len() < HEADER
            || &bytes[..8] != MAGIC
            || u32::from_le_bytes(bytes[8..12].try_into().expect("4")) as usize != dim
        {
            log::warn!(
                "{}: not an embedding cache for this backbone; starting it again",
                cache.path.display()
            );
            return cache;
        }
        let record = 32 + 4 * dim;
        for r in bytes[HEADER..].chunks_exact(record) {
            let key: Hash = r[..32].try_into().expect("32");
            let v: Vec<f32> = r[32..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
                .collect();
            if v.iter().all(|x| x.is_finite()) {
                cache.map.insert(key, v);
            }
        }
        // A record cut short (a crash while appending) would misalign every record
        // appended after it: rewrite the file whole on the next save instead.
        cache.fresh = !(bytes.len() - HEADER).is_multiple_of(record);
        cache
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Embeddings held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn get(&self, key: &Hash) -> Option<&Vec<f32>> {
        self.map.get(key)
    }

    fn insert(&mut self, key: Hash, v: Vec<f32>) {
        self.new.push((key, v.clone()));
        self.map.insert(key, v);
    }

    /// Writes the new records: appended, or the whole file when it was missing or bad.
    pub fn save(&mut self) -> Result<()> {
        if self.new.is_empty() && !self.fresh {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
        let record = |k: &Hash, v: &[f32], out: &mut Vec<u8>| {
            out.extend_from_slice(k);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        };
        if self.fresh {
            let mut bytes = Vec::with_capacity(HEADER + self.map.len() * (32 + 4 * self.dim));
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&(self.dim as u32).to_le_bytes());
            bytes.extend_from_slice(&[0; 4]);
            for (k, v) in &self.map {
                record(k, v, &mut bytes);
            }
            edgetune::bundle::write_atomic(&self.path, &bytes)?;
            self.fresh = false;
        } else {
            let mut bytes = Vec::new();
            for (k, v) in &self.new {
                record(k, v, &mut bytes);
            }
            let mut f = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .with_context(|| format!("cannot open the cache {}", self.path.display()))?;
            f.write_all(&bytes)
                .with_context(|| format!("cannot write the cache {}", self.path.display()))?;
        }
        self.new.clear();
        Ok(())
    }
}

/// Each job's embedding, or why it could not be made.
pub type Embeddings = Vec<Result<Vec<f32>, String>>;

/// One embedding to compute: an item, as found (`copy` 0) or an augmented copy.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The sample.
    pub item: &'a Item,
    /// 0 for the sample itself, k ≥ 1 for its k-th augmented copy.
    pub copy: u32,
}

/// What an embedding run did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Embeddings computed by the backbone.
    pub computed: usize,
    /// Embeddings found in the cache.
    pub cached: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Computes embeddings with a bundle's backbone.
pub struct Embedder<'b> {
    bundle: &'b Bundle,
    id: Hash,
    threads: usize,
    cache: Option<Cache>,
    /// Augmentation for copies ≥ 1, and its seed.
    pub augment: Augment,
    /// Seed of the augmentation.
    pub seed: u64,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

impl<'b> Embedder<'b> {
    /// An embedder for `bundle` on `threads` threads, with the cache in `cache_dir` if
    /// given.
    pub fn new(bundle: &'b Bundle, threads: usize, cache_dir: Option<&Path>) -> Embedder<'b> {
        let id = backbone_id(bundle);
        let dim = bundle.manifest.embedding.size;
        let has_backbone = bundle.manifest.backbone.format != BackboneFormat::None;
        Embedder {
            bundle,
            id,
            threads: threads.max(1),
            cache: cache_dir
                .filter(|_| has_backbone)
                .map(|d| Cache::open(d, &id, dim)),
            augment: Augment::default(),
            seed: 0,
            progress: true,
        }
    }

    /// The backbone's hash.
    pub fn id(&self) -> &Hash {
        &self.id
    }

    /// The cache, if used.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    fn key(&self, job: &Job) -> Hash {
        let variant = if job.copy == 0 {
            String::new()
        } else {
            self.augment.key(job.copy, self.seed)
        };
        Sha256::new()
            .chain_update(self.id)
            .chain_update(job.item.hash)
            .chain_update(variant.as_bytes())
            .finalize()
            .into()
    }

    /// The embedding of each job, or why it could not be made (an image that does not
    /// decode, a tensor the backbone refuses), in job order. Saves the cache after.
    pub fn run(&mut self, jobs: &[Job], what: &str) -> Result<(Embeddings, Stats)> {
        let start = Instant::now();
        let dim = self.bundle.manifest.embedding.size;
        let features_only = self.bundle.manifest.backbone.format == BackboneFormat::None;
        let mut out: Vec<Option<Result<Vec<f32>, String>>> = vec![None; jobs.len()];
        let mut stats = Stats::default();
        let keys: Vec<Hash> = jobs.iter().map(|j| self.key(j)).collect();
        let mut todo = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if features_only {
                out[i] = Some(match &job.item.input {
                    Input::Tensor(v) if v.len() == dim => Ok(v.clone()),
                    Input::Tensor(v) => Err(format!(
                        "{} values, the bundle's features are {dim}",
                        v.len()
                    )),
                    Input::Image(_) | Input::Text { .. } => Err(
                        "a bundle without backbone takes feature vectors (CSV or .npy), not \
                         images or text"
                            .into(),
                    ),
                });
            } else if let Some(v) = self.cache.as_ref().and_then(|c| c.get(&keys[i])) {
                out[i] = Some(Ok(v.clone()));
                stats.cached += 1;
            } else {
                todo.push(i);
            }
        }
        if !todo.is_empty() {
            let bar = if self.progress {
                let b = ProgressBar::new(todo.len() as u64);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(what.to_string());
                b
            } else {
                ProgressBar::hidden()
            };
            // One loaded graph, shared: each embedding runs its own state.
            let backbone = Backbone::from_bundle(self.bundle)
                .map_err(|e| anyhow::anyhow!("cannot load the bundle's backbone: {e}"))?;
            let next = AtomicUsize::new(0);
            let results = Mutex::new(Vec::with_capacity(todo.len()));
            let threads = self.threads.min(todo.len());
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        let mut emb = vec![0.0f32; dim];
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&i) = todo.get(k) else { break };
                            let r = embed_one(
                                &backbone,
                                self.bundle,
                                &jobs[i],
                                &self.augment,
                                self.seed,
                                &mut emb,
                            )
                            .map(|()| emb.clone());
                            results.lock().expect("not poisoned").push((i, r));
                            bar.inc(1);
                        }
                    });
                }
            });
            bar.finish_and_clear();
            for (i, r) in results.into_inner().expect("not poisoned") {
                if let (Ok(v), Some(c)) = (&r, self.cache.as_mut()) {
                    c.insert(keys[i], v.clone());
                }
                if r.is_ok() {
                    stats.computed += 1;
                }
                out[i] = Some(r);
            }
            if let Some(Err(e)) = self.cache.as_mut().map(Cache::save) {
                log::warn!("embedding cache not saved: {e:#}");
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok((
            out.into_iter()
                .map(|o| o.expect("every job answered"))
                .collect(),
            stats,
        ))
    }
}

/// One job's embedding into `out`.
fn embed_one(
    backbone: &Backbone,
    bundle: &Bundle,
    job: &Job,
    aug: &Augment,
    seed: u64,
    out: &mut [f32],
) -> Result<(), String> {
    let raw = match &job.item.input {
        Input::Text { ids, .. } => {
            if job.copy > 0 {
                return Err("augmentation applies to images only".into());
            }
            backbone.embed_tokens(ids, out).map_err(|e| e.to_string())?;
            return finite(out);
        }
        Input::Tensor(v) => {
            if job.copy > 0 {
                return Err("augmentation applies to images only".into());
            }
            v.clone()
        }
        Input::Image(path) => {
            let bytes = fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
            let img = edgetune::image::decode_image(&bytes).map_err(|e| e.to_string())?;
            let img = if job.copy > 0 {
                augment::variant(&img, aug, &job.item.hash, job.copy, seed)
            } else {
                img
            };
            edgetune::image::raw_input(&img, &bundle.manifest.input).map_err(|e| e.to_string())?
        }
    };
    backbone.embed(&raw, out).map_err(|e| e.to_string())?;
    finite(out)
}

fn finite(out: &[f32]) -> Result<(), String> {
    if out.iter().any(|v| !v.is_finite()) {
        return Err("the backbone gave a non-finite embedding".into());
    }
    Ok(())
}
