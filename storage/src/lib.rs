//! `storage`: one place where every stage turns a location URI into an object store.
//!
//! A [`Location`] is a store plus a prefix inside it, parsed from:
//! - a local path (`out/shards`, `/data/shards`) or `file:///data/shards`;
//! - `s3://bucket/prefix`: AWS S3 or any S3-compatible server. Credentials and endpoint come from
//!   the environment only (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AWS_REGION`, `AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true` for a plain-HTTP
//!   server), never from flags or configs, and are never logged;
//! - `gs://bucket/prefix` (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, ...);
//! - `az://container/prefix` (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).
//!
//! Writes are atomic per object: the local store writes a temporary file and renames it; S3, GCS
//! and Azure make a single PUT visible whole. Stages rely on that to commit a shard and then its
//! stats file, so a reader never sees half a shard.

use std::path::Path as FsPath;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use url::Url;

/// Total time the store keeps retrying one failed request before the stage gives up and reports
/// the object (a rerun then resumes). Client options (timeouts, `AWS_ALLOW_HTTP`) come from the
/// environment.
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one request.
const MAX_RETRIES: usize = 3;

/// The runtime that drives the `*_blocking` calls, started on first use. One for the process, so
/// the stores' connection pools outlive each call.
static BLOCKING: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("storage-io")
        .enable_all()
        .build()
        .expect("starting the storage I/O runtime")
});

/// A store and a prefix inside it: where a stage reads or writes its files.
#[derive(Debug, Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    uri: String,
}

impl Location {
    /// Parses `uri` (see the crate docs); a local directory is created if missing.
    pub fn parse(uri: &str) -> Result<Self> {
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match Url::parse(uri) {
            Ok(url) if url.scheme() == "s3" => {
                let store = AmazonS3Builder::from_env()
                    .with_url(uri)
                    .with_retry(retry_config())
                    .build()
                    .with_context(|| format!("configuring S3 for {uri}"))?;
                (Arc::new(store), url_prefix(&url)?)
            }
            Ok(url) if url.scheme() == "gs" => {
                let store = GoogleCloudStorageBuilder::from_env()
                    .with_url(uri)
                    .with_retry(retry_config())
                    .build()
                    .with_context(|| format!("configuring GCS for {uri}"))?;
                (Arc::new(store), url_prefix(&url)?)
            }
            Ok(url) if url.scheme() == "az" || url.scheme() == "abfs" => {
                let store = MicrosoftAzureBuilder::from_env()
                    .with_url(uri)
                    .with_retry(retry_config())
                    .build()
                    .with_context(|| format!("configuring Azure for {uri}"))?;
                (Arc::new(store), url_prefix(&url)?)
            }
            Ok(url) if url.scheme() == "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("{uri}: not a local file URI"))?;
                (local_store(&path)?, Path::default())
            }
            Ok(url) if url.scheme().len() > 1 => {
                bail!(
                    "{uri}: unsupported scheme `{}` (use a local path, file://, s3://, gs:// or az://)",
                    url.scheme()
                )
            }
            // A plain path (a one-letter "scheme" is a Windows drive letter).
            _ => (local_store(FsPath::new(uri))?, Path::default()),
        };
        Ok(Self {
            store,
            prefix,
            uri: uri.trim_end_matches('/').to_owned(),
        })
    }

    /// The URI this location was parsed from, without a trailing slash.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The URI of the object `name` inside this location (for messages and records).
    pub fn uri_of(&self, name: &str) -> String {
        format!("{}/{name}", self.uri)
    }

    fn path(&self, name: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// Reads the whole object `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let get = async { self.store.get(&self.path(name)).await?.bytes().await };
        get.await
            .with_context(|| format!("reading {}", self.uri_of(name)))
    }

    /// Reads the object `name`, or `None` when it does not exist.
    pub async fn get_if_exists(&self, name: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.path(name)).await {
            Ok(result) => {
                Ok(Some(result.bytes().await.with_context(|| {
                    format!("reading {}", self.uri_of(name))
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.uri_of(name))),
        }
    }

    /// Whether the object `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        match self.store.head(&self.path(name)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("checking {}", self.uri_of(name))),
        }
    }

    /// Writes the object `name` whole, replacing any previous one atomically.
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from_bytes(bytes))
            .await
            .with_context(|| format!("writing {}", self.uri_of(name)))?;
        Ok(())
    }

    /// Writes the object `name` only if it does not exist yet; returns `false` (and writes
    /// nothing) when it does. Stores that cannot create conditionally fall back to check-then-put.
    pub async fn put_if_absent(&self, name: &str, bytes: Bytes) -> Result<bool> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from_bytes(bytes.clone());
        match self
            .store
            .put_opts(&self.path(name), payload, options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                if self.exists(name).await? {
                    Ok(false)
                } else {
                    self.put(name, bytes).await.map(|()| true)
                }
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", self.uri_of(name))),
        }
    }

    /// Deletes the object `name`; a missing object is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {}", self.uri_of(name))),
        }
    }

    /// Names of every object under this location (recursively), relative to it, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let objects: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .with_context(|| format!("listing {}", self.uri))?;
        let mut names: Vec<String> = objects
            .into_iter()
            .filter_map(|meta| {
                meta.location.prefix_match(&self.prefix).map(|parts| {
                    parts
                        .map(|p| p.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Claims the run file `name` for `spec`: writes it as JSON unless it exists (conditional
    /// create, so concurrent processes agree on one). Returns `None` when the file is now
    /// `spec`'s (written here or already equal), or `Some(found)` when an earlier run wrote a
    /// different spec there: the caller refuses to mix the two runs' output.
    pub async fn claim_run_file<T>(&self, name: &str, spec: &T) -> Result<Option<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
    {
        let bytes = Bytes::from(serde_json::to_vec_pretty(spec)?);
        if self.put_if_absent(name, bytes).await? {
            return Ok(None);
        }
        let existing = self.get(name).await?;
        let existing: T = serde_json::from_slice(&existing)
            .with_context(|| format!("{} is not a run file of this command", self.uri_of(name)))?;
        Ok((existing != *spec).then_some(existing))
    }

    /// [`Location::get`] for synchronous code; must not be called from inside an async runtime.
    pub fn get_blocking(&self, name: &str) -> Result<Bytes> {
        BLOCKING.block_on(self.get(name))
    }

    /// [`Location::get_if_exists`] for synchronous code; must not be called from inside an
    /// async runtime.
    pub fn get_if_exists_blocking(&self, name: &str) -> Result<Option<Bytes>> {
        BLOCKING.block_on(self.get_if_exists(name))
    }

    /// [`Location::put`] for synchronous code; must not be called from inside an async runtime.
    pub fn put_blocking(&self, name: &str, bytes: Bytes) -> Result<()> {
        BLOCKING.block_on(self.put(name, bytes))
    }

    /// [`Location::delete`] for synchronous code; must not be called from inside an async
    /// runtime.
    pub fn delete_blocking(&self, name: &str) -> Result<()> {
        BLOCKING.block_on(self.delete(name))
    }

    /// [`Location::list`] for synchronous code; must not be called from inside an async runtime.
    pub fn list_blocking(&self) -> Result<Vec<String>> {
        BLOCKING.block_on(self.list())
    }
}

fn local_store(dir: &FsPath) -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // fsync: a file renamed into place is on disk before the next one (a shard before its
    // stats, a checkpoint's files before its manifest), as a remote PUT is durable when it
    // returns. Cleanup: deleting a folder's last file removes the empty folder.
    let store = LocalFileSystem::new_with_prefix(dir)
        .with_context(|| format!("opening {}", dir.display()))?
        .with_fsync(true)
        .with_automatic_cleanup(true);
    Ok(Arc::new(store))
}

/// The object prefix of a bucket URL: its path without the leading slash.
fn url_prefix(url: &Url) -> Result<Path> {
    Path::parse(url.path().trim_matches('/')).with_context(|| format!("prefix of {url}"))
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}
