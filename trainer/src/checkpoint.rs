//! Checkpoints for exact resume: a folder `step-NNNNNNNNNN/` per checkpoint holding the model,
//! the optimizer and the training state (step, data cursors; serialised by the caller), plus
//! `manifest.json` with each file's SHA-256, written last. The checkpoints live in a
//! [`storage::Location`]: a local folder or `s3://`, `gs://`, `az://` (credentials from the
//! environment).
//!
//! A checkpoint is complete only when its manifest exists, so a crash while writing leaves an
//! incomplete folder that is ignored (and overwritten by the next save of that step). Each file
//! is written whole or not at all (a single PUT on object storage; a temporary file renamed into
//! place locally). On load every file's checksum is verified and a corrupt file is named in the
//! error. The last `keep_last` checkpoints are kept; older ones are removed, manifest first,
//! after a new one is complete.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Location;

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

/// A verified checkpoint read back from its store.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// Its folder's URI (a local path or an object-store URI).
    pub uri: String,
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
            .with_context(|| format!("{}: no `{name}` in this checkpoint", self.uri))
    }
}

/// A folder of checkpoints, local or on object storage.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    location: Location,
    keep_last: usize,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn folder_of(step: u64) -> String {
    format!("{PREFIX}{step:010}")
}

impl CheckpointStore {
    /// Checkpoints under `uri` (a local folder, created if missing, or `s3://` ... ), keeping
    /// the newest `keep_last` (at least 1).
    pub fn open(uri: &str, keep_last: usize) -> Result<Self> {
        Ok(Self {
            location: Location::parse(uri)?,
            keep_last: keep_last.max(1),
        })
    }

    /// The URI of the checkpoint folder of `step`.
    pub fn uri_of(&self, step: u64) -> String {
        self.location.uri_of(&folder_of(step))
    }

    /// Writes a checkpoint of `files` (name, contents) taken after `step`, manifest last, then
    /// removes checkpoints beyond the newest `keep_last`. Returns its URI.
    pub fn save(&self, step: u64, files: &[(&str, &[u8])]) -> Result<String> {
        let folder = folder_of(step);
        // A previous, unfinished save of this step must not look complete while it is rewritten.
        self.location
            .delete_blocking(&format!("{folder}/{MANIFEST}"))?;
        let mut manifest = CheckpointManifest {
            step,
            files: BTreeMap::new(),
        };
        for (name, bytes) in files {
            if *name == MANIFEST || name.contains('/') {
                bail!("checkpoint file name `{name}` is not allowed");
            }
            self.location
                .put_blocking(&format!("{folder}/{name}"), Bytes::copy_from_slice(bytes))?;
            manifest.files.insert((*name).to_owned(), sha256_hex(bytes));
        }
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        self.location
            .put_blocking(&format!("{folder}/{MANIFEST}"), manifest_bytes.into())?;
        self.prune()?;
        Ok(self.uri_of(step))
    }

    /// Steps of the complete checkpoints (those with a manifest), oldest first.
    pub fn steps(&self) -> Result<Vec<u64>> {
        let mut steps: Vec<u64> = self
            .location
            .list_blocking()?
            .iter()
            .filter_map(|name| {
                let (folder, file) = name.split_once('/')?;
                (file == MANIFEST).then_some(())?;
                folder.strip_prefix(PREFIX)?.parse().ok()
            })
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    fn prune(&self) -> Result<()> {
        let steps = self.steps()?;
        let excess = steps.len().saturating_sub(self.keep_last);
        if excess == 0 {
            return Ok(());
        }
        let names = self.location.list_blocking()?;
        for step in &steps[..excess] {
            let folder = format!("{}/", folder_of(*step));
            // Manifest first: a checkpoint half removed is incomplete, never corrupt.
            self.location
                .delete_blocking(&format!("{folder}{MANIFEST}"))?;
            for name in names.iter().filter(|name| name.starts_with(&folder)) {
                self.location.delete_blocking(name)?;
            }
        }
        Ok(())
    }

    /// Reads and verifies the checkpoint after `step`. A missing or altered file is an error
    /// naming it.
    pub fn load(&self, step: u64) -> Result<LoadedCheckpoint> {
        let folder = folder_of(step);
        let manifest_name = format!("{folder}/{MANIFEST}");
        let manifest_uri = self.location.uri_of(&manifest_name);
        let manifest: CheckpointManifest =
            serde_json::from_slice(&self.location.get_blocking(&manifest_name)?)
                .with_context(|| format!("{manifest_uri}: corrupt checkpoint manifest"))?;
        if manifest.step != step {
            bail!(
                "{manifest_uri}: manifest says step {}, folder says {step}",
                manifest.step
            );
        }
        let mut files = BTreeMap::new();
        for (name, expected) in &manifest.files {
            let object = format!("{folder}/{name}");
            let uri = self.location.uri_of(&object);
            let bytes = self
                .location
                .get_if_exists_blocking(&object)?
                .with_context(|| format!("corrupt checkpoint: {uri} is missing"))?;
            let actual = sha256_hex(&bytes);
            if &actual != expected {
                bail!(
                    "corrupt checkpoint: {uri} has SHA-256 {actual}, its manifest says {expected}"
                );
            }
            files.insert(name.clone(), bytes.to_vec());
        }
        Ok(LoadedCheckpoint {
            uri: self.uri_of(step),
            step,
            files,
        })
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
