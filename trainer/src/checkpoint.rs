//! Checkpoints for exact resume: a folder `step-NNNNNNNNNN/` per checkpoint holding the model,
//! the optimizer and the training state (step, RNG, data cursor; serialised by the caller), plus
//! `manifest.json` with each file's SHA-256, written last.
//!
//! A checkpoint is complete only when its manifest exists, so a crash while writing leaves an
//! incomplete folder that is ignored. Locally the folder is first written under a temporary name
//! and renamed into place, so even the folder name appears atomically. On load every file's
//! checksum is verified and a corrupt file is named in the error. The last `keep_last`
//! checkpoints are kept; older ones are removed after a new one is complete.
//!
//! Object storage (the manifest-last rule works there too) is not built yet: checkpoints are local.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MANIFEST: &str = "manifest.json";
const PREFIX: &str = "step-";

/// The manifest of one checkpoint: which files it holds and their checksums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// Training step the checkpoint was taken after.
    pub step: u64,
    /// File name -> lower-case hex SHA-256.
    pub files: BTreeMap<String, String>,
}

/// A verified checkpoint read back from disk.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// Its folder.
    pub path: PathBuf,
    /// Training step it was taken after.
    pub step: u64,
    /// File name -> contents, every checksum verified.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl LoadedCheckpoint {
    /// The contents of `name`, or an error naming the checkpoint and the file.
    pub fn file(&self, name: &str) -> Result<&[u8]> {
        self.files
            .get(name)
            .map(Vec::as_slice)
            .with_context(|| format!("{}: no `{name}` in this checkpoint", self.path.display()))
    }
}

/// A folder of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep_last: usize,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

impl CheckpointStore {
    /// Checkpoints under `dir`, keeping the newest `keep_last` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Self {
        Self {
            dir: dir.into(),
            keep_last: keep_last.max(1),
        }
    }

    /// The folder of the checkpoint after `step`.
    pub fn path_of(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{step:010}"))
    }

    /// Writes a checkpoint of `files` (name, contents) taken after `step`, then removes
    /// checkpoints beyond the newest `keep_last`. Returns its folder.
    pub fn save(&self, step: u64, files: &[(&str, &[u8])]) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let final_path = self.path_of(step);
        let temp = self
            .dir
            .join(format!(".{PREFIX}{step:010}.tmp-{}", std::process::id()));
        if temp.exists() {
            fs::remove_dir_all(&temp).with_context(|| format!("removing {}", temp.display()))?;
        }
        fs::create_dir(&temp).with_context(|| format!("creating {}", temp.display()))?;
        let mut manifest = CheckpointManifest {
            step,
            files: BTreeMap::new(),
        };
        for (name, bytes) in files {
            if *name == MANIFEST || name.contains('/') {
                bail!("checkpoint file name `{name}` is not allowed");
            }
            write_synced(&temp.join(name), bytes)?;
            manifest.files.insert((*name).to_owned(), sha256_hex(bytes));
        }
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        write_synced(&temp.join(MANIFEST), &manifest_bytes)?;
        if final_path.exists() {
            fs::remove_dir_all(&final_path)
                .with_context(|| format!("replacing {}", final_path.display()))?;
        }
        fs::rename(&temp, &final_path)
            .with_context(|| format!("renaming {} to {}", temp.display(), final_path.display()))?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.prune()?;
        Ok(final_path)
    }

    /// Steps of the complete checkpoints (those with a manifest), oldest first.
    pub fn steps(&self) -> Result<Vec<u64>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        let mut steps: Vec<u64> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let step = entry
                    .file_name()
                    .to_str()?
                    .strip_prefix(PREFIX)?
                    .parse()
                    .ok()?;
                entry.path().join(MANIFEST).exists().then_some(step)
            })
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    fn prune(&self) -> Result<()> {
        let steps = self.steps()?;
        let excess = steps.len().saturating_sub(self.keep_last);
        for step in &steps[..excess] {
            let path = self.path_of(*step);
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    /// Reads and verifies the checkpoint after `step`. A missing or altered file is an error
    /// naming it.
    pub fn load(&self, step: u64) -> Result<LoadedCheckpoint> {
        let path = self.path_of(step);
        let manifest_path = path.join(MANIFEST);
        let manifest: CheckpointManifest = serde_json::from_slice(
            &fs::read(&manifest_path)
                .with_context(|| format!("reading {}", manifest_path.display()))?,
        )
        .with_context(|| format!("{}: corrupt checkpoint manifest", manifest_path.display()))?;
        if manifest.step != step {
            bail!(
                "{}: manifest says step {}, folder says {step}",
                manifest_path.display(),
                manifest.step
            );
        }
        let mut files = BTreeMap::new();
        for (name, expected) in &manifest.files {
            let file = path.join(name);
            let bytes = fs::read(&file)
                .with_context(|| format!("corrupt checkpoint: {} is missing", file.display()))?;
            let actual = sha256_hex(&bytes);
            if &actual != expected {
                bail!(
                    "corrupt checkpoint: {} has SHA-256 {actual}, its manifest says {expected}",
                    file.display()
                );
            }
            files.insert(name.clone(), bytes);
        }
        Ok(LoadedCheckpoint { path, step, files })
    }

    /// The newest complete checkpoint, verified, or `None` when there is none.
    pub fn latest(&self) -> Result<Option<LoadedCheckpoint>> {
        match self.steps()?.last() {
            Some(&step) => self.load(step).map(Some),
            None => Ok(None),
        }
    }
}

/// Re-seeds the backend's random generator (dropout masks) from the run seed and the step, so
/// step N draws the same masks whether or not the run was resumed in between. Call it before
/// every training step.
pub fn seed_step<B: Backend>(device: &B::Device, run_seed: u64, step: u64) {
    let mixed = run_seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    B::seed(device, mixed);
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

/// A module's parameters as bytes (Burn's named MessagePack record, full precision).
pub fn module_to_bytes<B: Backend, M: Module<B>>(module: M) -> Result<Vec<u8>> {
    Recorder::<B>::record(&recorder(), module.into_record(), ())
        .map_err(|e| anyhow::anyhow!("recording the model: {e}"))
}

/// Loads parameters saved by [`module_to_bytes`] into `module` (same architecture).
pub fn module_from_bytes<B: Backend, M: Module<B>>(
    module: M,
    bytes: &[u8],
    device: &B::Device,
) -> Result<M> {
    let record = Recorder::<B>::load(&recorder(), bytes.to_vec(), device)
        .map_err(|e| anyhow::anyhow!("loading the model: {e}"))?;
    Ok(module.load_record(record))
}

/// An optimizer's state (moments, step counts per parameter) as bytes.
pub fn optimizer_to_bytes<O, M, B>(optimizer: &OptimizerAdaptor<O, M, B>) -> Result<Vec<u8>>
where
    B: AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: burn::optim::SimpleOptimizer<B::InnerBackend>,
{
    Recorder::<B>::record(&recorder(), optimizer.to_record(), ())
        .map_err(|e| anyhow::anyhow!("recording the optimizer: {e}"))
}

/// Restores optimizer state saved by [`optimizer_to_bytes`].
pub fn optimizer_from_bytes<O, M, B>(
    optimizer: OptimizerAdaptor<O, M, B>,
    bytes: &[u8],
    device: &B::Device,
) -> Result<OptimizerAdaptor<O, M, B>>
where
    B: AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: burn::optim::SimpleOptimizer<B::InnerBackend>,
{
    let record = Recorder::<B>::load(&recorder(), bytes.to_vec(), device)
        .map_err(|e| anyhow::anyhow!("loading the optimizer: {e}"))?;
    Ok(optimizer.load_record(record))
}
