//! Data-parallel training across processes and nodes: who this process is (rank, world size,
//! rendezvous, read from the scheduler's environment) and the collective operations the training
//! loop needs (mean of gradients, gathering small byte strings).
//!
//! # Engine
//!
//! burn-collective 0.21 (Burn's own multi-node all-reduce: a registration orchestrator and
//! peer-to-peer tensor transfers over WebSocket/TCP), vendored under `vendor/` with two patches
//! (`vendor/README.md`): its barrier lost every all-reduce after the first, and its servers now
//! bind the host in `BURN_COMMUNICATION_BIND_HOST`. Tensors travel as host copies, so one engine
//! serves the CPU and the CUDA build alike. It has no timeouts of its own: every call here runs
//! under a deadline (`train.collective_timeout_s`), and a peer that died or hangs turns into an
//! error naming this rank and the operation, never a hang.
//!
//! # Rank and rendezvous
//!
//! | what | read from, first found wins | default |
//! |---|---|---|
//! | rank, world size | `IMAGEBERT_RANK` + `IMAGEBERT_WORLD_SIZE`; `SLURM_PROCID` + `SLURM_NTASKS` (srun); `JOB_COMPLETION_INDEX` (Kubernetes Indexed Job) + `IMAGEBERT_WORLD_SIZE` | 0 of 1 |
//! | rank 0's host | `IMAGEBERT_MASTER_ADDR`; the first host of `SLURM_JOB_NODELIST` | `127.0.0.1` |
//! | rank 0's port | `IMAGEBERT_MASTER_PORT` | 29500 |
//! | this rank's host, as the others reach it | `IMAGEBERT_NODE_ADDR`; `SLURMD_NODENAME` | `127.0.0.1` when rank 0's host is loopback, else required |
//!
//! Rank 0 runs the orchestrator on the master port; rank `r` serves its tensors on
//! `master port + 1 + r`, so several ranks can share one host.
//!
//! # Gradients through NCCL
//!
//! On CUDA builds the step's gradient mean goes through NCCL instead ([`GradientEngine`],
//! `train.all_reduce`): the ranks first meet through burn-collective as above, rank 0 makes an
//! NCCL id and shares it, and every rank joins an NCCL communicator on its own GPU
//! ([`local_rank`] picks it). Everything else (weight comparisons, gathered state) stays on
//! burn-collective. `auto` takes NCCL only when every rank can load it, so a job never mixes
//! the two engines.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use backend::nccl::{self, NcclGroup};
use burn::backend::NdArray;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{
    AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The backend tensors cross the network on: host memory, whatever the training backend.
type Wire = NdArray<f32>;

/// Rank 0's port when `IMAGEBERT_MASTER_PORT` is not set.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// This process's place among the training processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    /// This process's rank, `0..size`.
    pub rank: usize,
    /// Processes in the job.
    pub size: usize,
}

impl World {
    /// One process alone.
    pub const SINGLE: World = World { rank: 0, size: 1 };

    /// Rank and world size from this process's environment (see the module docs).
    pub fn from_env() -> Result<Self> {
        Self::resolve(|name| std::env::var(name).ok())
    }

    /// Rank and world size from the variables `env` returns (see the module docs).
    pub fn resolve(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            env(name)
                .map(|value| {
                    value
                        .trim()
                        .parse()
                        .with_context(|| format!("{name}={value:?} is not a number"))
                })
                .transpose()
        };
        let pairs = [
            ("IMAGEBERT_RANK", "IMAGEBERT_WORLD_SIZE"),
            ("SLURM_PROCID", "SLURM_NTASKS"),
            ("JOB_COMPLETION_INDEX", "IMAGEBERT_WORLD_SIZE"),
        ];
        for (rank_name, size_name) in pairs {
            if let Some(rank) = number(rank_name)? {
                let size = number(size_name)?
                    .with_context(|| format!("{rank_name} is set but {size_name} is not"))?;
                ensure!(
                    rank < size,
                    "{rank_name}={rank} is not below {size_name}={size}"
                );
                return Ok(World { rank, size });
            }
        }
        Ok(Self::SINGLE)
    }
}

/// This process's rank among the processes on its node, which picks its GPU
/// ([`backend::device_for_local_rank`]): `IMAGEBERT_LOCAL_RANK`, `SLURM_LOCALID` (srun) or
/// `LOCAL_RANK`, first found; 0 without any (one process per node or per Kubernetes pod).
pub fn local_rank(env: impl Fn(&str) -> Option<String>) -> Result<usize> {
    for name in ["IMAGEBERT_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"] {
        if let Some(value) = env(name) {
            return value
                .trim()
                .parse()
                .with_context(|| format!("{name}={value:?} is not a number"));
        }
    }
    Ok(0)
}

/// Which engine averages the gradients of a data-parallel step (`train.all_reduce`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GradientEngine {
    /// NCCL when every rank can load it (CUDA builds with libnccl), burn-collective otherwise.
    #[default]
    Auto,
    /// burn-collective: host copies over WebSocket/TCP, any build.
    BurnCollective,
    /// NCCL on every rank's GPU; an error when a rank cannot load it.
    Nccl,
}

impl GradientEngine {
    /// Whether to use NCCL, given which ranks can load it (in rank order).
    pub fn takes_nccl(self, ranks_with_nccl: &[bool]) -> Result<bool> {
        let without: Vec<usize> = (0..ranks_with_nccl.len())
            .filter(|&rank| !ranks_with_nccl[rank])
            .collect();
        Ok(match self {
            GradientEngine::BurnCollective => false,
            GradientEngine::Auto => without.is_empty(),
            GradientEngine::Nccl => {
                ensure!(
                    without.is_empty(),
                    "NCCL was asked for (train.all_reduce or --all-reduce), but ranks {without:?} \
                     cannot load it (a CPU build, or no libnccl.so on LD_LIBRARY_PATH; docs/gpu.md)"
                );
                true
            }
        })
    }
}

/// Where the ranks meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Rank 0's host (the orchestrator's).
    pub master_host: String,
    /// The orchestrator's port; rank `r` serves on `master_port + 1 + r`.
    pub master_port: u16,
    /// This rank's host as the other ranks reach it.
    pub node_host: String,
}

impl Rendezvous {
    /// The rendezvous from this process's environment (see the module docs).
    pub fn from_env() -> Result<Self> {
        Self::resolve(|name| std::env::var(name).ok())
    }

    /// The rendezvous from the variables `env` returns (see the module docs).
    pub fn resolve(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let master_host = match env("IMAGEBERT_MASTER_ADDR") {
            Some(host) => host,
            None => match env("SLURM_JOB_NODELIST") {
                Some(list) => first_host(&list)
                    .with_context(|| format!("SLURM_JOB_NODELIST={list:?} names no host"))?,
                None => "127.0.0.1".to_owned(),
            },
        };
        let master_port = match env("IMAGEBERT_MASTER_PORT") {
            Some(port) => port
                .trim()
                .parse()
                .with_context(|| format!("IMAGEBERT_MASTER_PORT={port:?} is not a port"))?,
            None => DEFAULT_MASTER_PORT,
        };
        let loopback = matches!(master_host.as_str(), "127.0.0.1" | "localhost" | "::1");
        let node_host = match env("IMAGEBERT_NODE_ADDR").or_else(|| env("SLURMD_NODENAME")) {
            Some(host) => host,
            None if loopback => "127.0.0.1".to_owned(),
            None => bail!(
                "rank 0 is on {master_host}: set IMAGEBERT_NODE_ADDR to this rank's address \
                 as the other ranks reach it"
            ),
        };
        Ok(Rendezvous {
            master_host,
            master_port,
            node_host,
        })
    }

    /// The port rank `rank` serves its tensors on.
    pub fn data_port(&self, rank: usize) -> Result<u16> {
        u16::try_from(usize::from(self.master_port) + 1 + rank)
            .ok()
            .with_context(|| {
                format!(
                    "master port {} + 1 + rank {rank} is past 65535",
                    self.master_port
                )
            })
    }
}

/// The first host of a Slurm host list: `gpu[03-05,9],cpu1` → `gpu03`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find(',').unwrap_or(list.len());
    let bracket = list.find('[');
    match bracket {
        Some(open) if open < end => {
            let close = list[open..].find(']')? + open;
            let first = list[open + 1..close].split([',', '-']).next()?;
            Some(format!("{}{first}", &list[..open]))
        }
        _ => (end > 0).then(|| list[..end].to_owned()),
    }
}

/// A joined group of ranks: every call must be made by all ranks in the same order.
#[derive(Debug)]
pub struct Collective {
    world: World,
    timeout: Duration,
    /// The gradient engine when it is NCCL (see [`Collective::with_gradient_engine`]).
    nccl: Option<NcclGroup>,
}

impl Collective {
    /// Joins the other ranks (rank 0 first starts the orchestrator), waiting at most `timeout`
    /// for all of them to arrive.
    pub fn join(world: World, rendezvous: &Rendezvous, timeout: Duration) -> Result<Self> {
        ensure!(world.size > 1, "a collective needs at least two ranks");
        let collective = Collective {
            world,
            timeout,
            nccl: None,
        };
        let port = rendezvous.data_port(world.rank)?;
        if world.rank == 0 {
            let master_port = rendezvous.master_port;
            check_free(master_port)?;
            std::thread::Builder::new()
                .name("collective-orchestrator".into())
                .spawn(move || match tokio::runtime::Runtime::new() {
                    Ok(runtime) => {
                        runtime.block_on(burn_collective::start_global_orchestrator(master_port))
                    }
                    Err(error) => tracing::error!(%error, "no runtime for the orchestrator"),
                })
                .context("starting the collective orchestrator")?;
        }
        check_free(port)?;
        let parse = |address: String| {
            address
                .parse()
                .map_err(|e| anyhow::anyhow!("address {address}: {e:?}"))
        };
        let size = u32::try_from(world.size).context("world size past u32")?;
        let config = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(size)
            .with_global_address(parse(format!(
                "ws://{}:{}",
                rendezvous.master_host, rendezvous.master_port
            ))?)
            .with_node_address(parse(format!("ws://{}:{port}", rendezvous.node_host))?)
            .with_data_service_port(port)
            .with_global_all_reduce_strategy(AllReduceStrategy::Ring);
        let rank = collective.peer();
        collective.within("joining the other ranks", move || {
            burn_collective::register::<Wire>(rank, Default::default(), config)
        })?;
        tracing::info!(
            rank = world.rank,
            size = world.size,
            "joined the other ranks"
        );
        Ok(collective)
    }

    /// This process's place in the group.
    pub fn world(&self) -> World {
        self.world
    }

    fn peer(&self) -> PeerId {
        // One device per process: peer ids only have to be unique within a process.
        PeerId::from(0u32)
    }

    /// Chooses what [`Collective::mean`] runs on: NCCL on GPU `ordinal` or burn-collective, as
    /// `engine` says and every rank's NCCL allows (all ranks call this together).
    pub fn with_gradient_engine(mut self, engine: GradientEngine, ordinal: usize) -> Result<Self> {
        // burn-collective needs no answer from the other ranks.
        let takes_nccl = engine != GradientEngine::BurnCollective && {
            let what = "finding which ranks can load NCCL";
            let ranks_with_nccl: Vec<bool> = self
                .gather_bytes(&[u8::from(nccl::available())], what)?
                .iter()
                .map(|flag| flag.as_slice() == [1])
                .collect();
            engine.takes_nccl(&ranks_with_nccl)?
        };
        if takes_nccl {
            let World { rank, size } = self.world;
            let id = match rank {
                0 => nccl::new_id()?.to_vec(),
                _ => Vec::new(),
            };
            let shared = self.gather_bytes(&id, "sharing rank 0's NCCL id")?;
            let id = <[u8; nccl::ID_BYTES]>::try_from(shared[0].as_slice())
                .ok()
                .context("rank 0 sent an NCCL id of the wrong length")?;
            self.nccl = Some(NcclGroup::join(id, rank, size, ordinal, self.timeout)?);
        }
        tracing::info!(
            rank = self.world.rank,
            engine = ?self.gradient_engine(),
            "gradient all-reduce"
        );
        Ok(self)
    }

    /// What [`Collective::mean`] runs on: NCCL or burn-collective.
    pub fn gradient_engine(&self) -> GradientEngine {
        match self.nccl {
            Some(_) => GradientEngine::Nccl,
            None => GradientEngine::BurnCollective,
        }
    }

    /// The element-wise mean of every rank's `values` (all ranks pass the same length), through
    /// the gradient engine.
    pub fn mean(&self, values: Vec<f32>, what: &str) -> Result<Vec<f32>> {
        match &self.nccl {
            Some(group) => group.mean(values, what),
            None => self.all_reduce(values, ReduceOperation::Mean, what),
        }
    }

    /// Every rank's `bytes`, in rank order, on every rank.
    pub fn gather_bytes(&self, bytes: &[u8], what: &str) -> Result<Vec<Vec<u8>>> {
        let size = self.world.size;
        // f32 holds whole numbers up to 2^24 exactly, and a sum with zeros is exact.
        ensure!(
            bytes.len() < 1 << 24,
            "{what}: {} bytes is too many to gather",
            bytes.len()
        );
        let mut lengths = vec![0.0f32; size];
        lengths[self.world.rank] = bytes.len() as f32;
        let lengths = self.all_reduce(lengths, ReduceOperation::Sum, what)?;
        let longest = lengths.iter().fold(0.0f32, |a, &b| a.max(b)) as usize;
        let mut slots = vec![0.0f32; size * longest.max(1)];
        let own = self.world.rank * longest.max(1);
        for (slot, &byte) in slots[own..].iter_mut().zip(bytes) {
            *slot = f32::from(byte);
        }
        let slots = self.all_reduce(slots, ReduceOperation::Sum, what)?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(rank, &length)| {
                let start = rank * longest.max(1);
                slots[start..start + length as usize]
                    .iter()
                    .map(|&value| value as u8)
                    .collect()
            })
            .collect())
    }

    fn all_reduce(&self, values: Vec<f32>, op: ReduceOperation, what: &str) -> Result<Vec<f32>> {
        let length = values.len();
        let peer = self.peer();
        let reduced = self.within(what, move || {
            let device = Default::default();
            let tensor = Tensor::<Wire, 1>::from_data(TensorData::new(values, [length]), &device);
            burn_collective::all_reduce::<Wire>(peer, tensor.into_primitive().tensor(), op)
        })?;
        Tensor::<Wire, 1>::from_primitive(TensorPrimitive::Float(reduced))
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{what}: reading the reduced values: {e:?}"))
    }

    /// Runs one blocking collective call on a helper thread and gives up after the timeout, so
    /// a dead or stuck peer ends this rank with an error instead of a hang.
    fn within<T: Send + 'static>(
        &self,
        what: &str,
        call: impl FnOnce() -> Result<T, CollectiveError> + Send + 'static,
    ) -> Result<T> {
        let World { rank, size } = self.world;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("collective-call".into())
            .spawn(move || {
                let _ = sender.send(call());
            })
            .context("starting a collective call")?;
        match receiver.recv_timeout(self.timeout) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => bail!(
                "rank {rank} of {size}: {what} failed ({error:?}); a peer rank probably stopped"
            ),
            Err(RecvTimeoutError::Timeout) => bail!(
                "rank {rank} of {size}: {what} got no answer within {} s: a peer rank died, \
                 hangs or never started (train.collective_timeout_s)",
                self.timeout.as_secs_f64()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!(
                "rank {rank} of {size}: {what} broke off: the connection to a peer rank was lost \
                 (it probably died)"
            ),
        }
    }
}

/// Every parameter's gradient in module order, flattened into one vector (zeros for a parameter
/// without a gradient), so that ranks can average them in a single all-reduce. The order is the
/// module's structure, the same in every process (parameter ids are drawn at random per process).
pub fn flatten_gradients<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    gradients: &GradientsParams,
) -> Vec<f32> {
    struct Flatten<'a> {
        gradients: &'a GradientsParams,
        values: Vec<f32>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            match self.gradients.get::<B::InnerBackend, D>(param.id) {
                Some(gradient) => {
                    let data = gradient.into_data();
                    // f32 gradients are one slice; any other float type converts per element.
                    match data.as_slice::<f32>() {
                        Ok(values) => self.values.extend_from_slice(values),
                        Err(_) => self.values.extend(data.iter::<f32>()),
                    }
                }
                None => self
                    .values
                    .extend(std::iter::repeat_n(0.0, param.val().shape().num_elements())),
            }
        }
    }
    let mut flatten = Flatten {
        gradients,
        values: Vec::new(),
    };
    module.visit(&mut flatten);
    flatten.values
}

/// The inverse of [`flatten_gradients`]: a gradient for every parameter of `module`, cut from
/// `values` in module order.
pub fn gradients_from_flat<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    values: &[f32],
) -> Result<GradientsParams> {
    struct Unflatten<'a> {
        values: &'a [f32],
        offset: usize,
        gradients: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let shape = value.shape();
            let end = (self.offset + shape.num_elements()).min(self.values.len());
            let slice = self.values[self.offset.min(end)..end].to_vec();
            self.offset += shape.num_elements();
            if slice.len() == shape.num_elements() {
                let gradient = Tensor::<B::InnerBackend, D>::from_data(
                    TensorData::new(slice, shape),
                    &value.device(),
                );
                self.gradients.register(param.id, gradient);
            }
        }
    }
    let mut unflatten = Unflatten {
        values,
        offset: 0,
        gradients: GradientsParams::new(),
    };
    module.visit(&mut unflatten);
    ensure!(
        unflatten.offset == values.len(),
        "{} gradient values for a model of {} parameters",
        values.len(),
        unflatten.offset
    );
    Ok(unflatten.gradients)
}

/// SHA-256 of every parameter's values in module order: equal on two ranks exactly when they
/// hold the same weights.
pub fn weights_hash<B: AutodiffBackend, M: Module<B>>(module: &M) -> [u8; 32] {
    struct Hash(Sha256);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Hash {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for value in param.val().into_data().iter::<f32>() {
                self.0.update(value.to_le_bytes());
            }
        }
    }
    let mut hash = Hash(Sha256::new());
    module.visit(&mut hash);
    hash.0.finalize().into()
}

/// Fails, naming the ranks that differ, unless every rank's weight hash equals rank 0's.
pub fn check_replicas(hashes: &[Vec<u8>], step: u64) -> Result<()> {
    let differing: Vec<usize> = hashes
        .iter()
        .enumerate()
        .filter(|(_, hash)| *hash != &hashes[0])
        .map(|(rank, _)| rank)
        .collect();
    ensure!(
        differing.is_empty(),
        "after step {step} ranks {differing:?} hold other weights than rank 0: the replicas \
         diverged (different configs, seeds or checkpoints per rank?)"
    );
    Ok(())
}

/// A base port with `count` consecutive free ports from it on 127.0.0.1: where a job on one
/// host (tests, `trainer bench-scaling`) puts its rendezvous and its ranks.
pub fn free_ports(count: u16) -> Result<u16> {
    for _ in 0..100 {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let base = probe.local_addr()?.port();
        drop(probe);
        if base.checked_add(count).is_some()
            && (base..base + count)
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        {
            return Ok(base);
        }
    }
    bail!("no {count} consecutive free ports on 127.0.0.1")
}

/// Fails with a clear message when `port` is taken on this host.
fn check_free(port: u16) -> Result<()> {
    let host =
        std::env::var("BURN_COMMUNICATION_BIND_HOST").unwrap_or_else(|_| "0.0.0.0".to_owned());
    std::net::TcpListener::bind((host.as_str(), port))
        .map(drop)
        .with_context(|| {
            format!("port {port} on {host} is taken: pick another IMAGEBERT_MASTER_PORT")
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn world_comes_from_the_scheduler() {
        assert_eq!(World::resolve(env(&[])).unwrap(), World::SINGLE);
        assert_eq!(
            World::resolve(env(&[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4")])).unwrap(),
            World { rank: 2, size: 4 }
        );
        assert_eq!(
            World::resolve(env(&[
                ("JOB_COMPLETION_INDEX", "1"),
                ("IMAGEBERT_WORLD_SIZE", "3")
            ]))
            .unwrap(),
            World { rank: 1, size: 3 }
        );
        // The explicit variables win over the scheduler's.
        assert_eq!(
            World::resolve(env(&[
                ("IMAGEBERT_RANK", "0"),
                ("IMAGEBERT_WORLD_SIZE", "2"),
                ("SLURM_PROCID", "5"),
                ("SLURM_NTASKS", "8")
            ]))
            .unwrap(),
            World { rank: 0, size: 2 }
        );
        let error = World::resolve(env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err();
        assert!(
            error.to_string().contains("IMAGEBERT_WORLD_SIZE"),
            "{error}"
        );
        let error =
            World::resolve(env(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")])).unwrap_err();
        assert!(error.to_string().contains("not below"), "{error}");
    }

    #[test]
    fn rendezvous_defaults_to_loopback_and_reads_slurm_hosts() {
        let local = Rendezvous::resolve(env(&[])).unwrap();
        assert_eq!(local.master_host, "127.0.0.1");
        assert_eq!(local.node_host, "127.0.0.1");
        assert_eq!(local.data_port(2).unwrap(), DEFAULT_MASTER_PORT + 3);
        let slurm = Rendezvous::resolve(env(&[
            ("SLURM_JOB_NODELIST", "gpu[07-09,12]"),
            ("SLURMD_NODENAME", "gpu08"),
            ("IMAGEBERT_MASTER_PORT", "31000"),
        ]))
        .unwrap();
        assert_eq!(
            (
                slurm.master_host.as_str(),
                slurm.master_port,
                slurm.node_host.as_str()
            ),
            ("gpu07", 31000, "gpu08")
        );
        let error = Rendezvous::resolve(env(&[("IMAGEBERT_MASTER_ADDR", "trainer-0.trainer")]))
            .unwrap_err();
        assert!(error.to_string().contains("IMAGEBERT_NODE_ADDR"), "{error}");
    }

    #[test]
    fn replicas_must_agree() {
        let same = vec![vec![1u8, 2], vec![1, 2], vec![1, 2]];
        check_replicas(&same, 3).unwrap();
        let differ = vec![vec![1u8, 2], vec![1, 2], vec![9, 2]];
        let error = check_replicas(&differ, 3).unwrap_err();
        assert!(error.to_string().contains("ranks [2]"), "{error}");
    }

    #[test]
    fn gradients_survive_flattening() {
        use burn::backend::Autodiff;
        use burn::nn::{Linear, LinearConfig};
        type B = Autodiff<NdArray<f32>>;
        let device = Default::default();
        let layer: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let input = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0]], &device);
        let gradients = GradientsParams::from_grads(layer.forward(input).sum().backward(), &layer);
        let flat = flatten_gradients(&layer, &gradients);
        // Weight 3x2 (each column's gradient is the input), bias 2 (ones).
        assert_eq!(flat, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0]);
        let back = gradients_from_flat(&layer, &flat).unwrap();
        assert_eq!(flatten_gradients(&layer, &back), flat);
        assert!(gradients_from_flat(&layer, &flat[1..]).is_err());
        let hash = weights_hash(&layer);
        assert_eq!(hash, weights_hash(&layer.clone()));
        let other: Linear<B> = LinearConfig::new(3, 2).init(&device);
        assert_ne!(hash, weights_hash(&other));
    }

    #[test]
    fn first_host_expands_slurm_lists() {
        assert_eq!(first_host("node1").as_deref(), Some("node1"));
        assert_eq!(first_host("a[3-5],b").as_deref(), Some("a3"));
        assert_eq!(first_host("x,y[1-2]").as_deref(), Some("x"));
        assert_eq!(first_host("gpu[012,020-021]").as_deref(), Some("gpu012"));
        assert_eq!(first_host(""), None);
    }

    #[test]
    fn local_rank_comes_from_the_launcher() {
        assert_eq!(local_rank(env(&[])).unwrap(), 0);
        assert_eq!(local_rank(env(&[("SLURM_LOCALID", "5")])).unwrap(), 5);
        assert_eq!(local_rank(env(&[("LOCAL_RANK", "2")])).unwrap(), 2);
        let both = env(&[("IMAGEBERT_LOCAL_RANK", "1"), ("SLURM_LOCALID", "7")]);
        assert_eq!(local_rank(both).unwrap(), 1);
        let error = local_rank(env(&[("SLURM_LOCALID", "x")])).unwrap_err();
        assert!(error.to_string().contains("SLURM_LOCALID"), "{error}");
    }

    #[test]
    fn nccl_is_taken_only_when_every_rank_has_it() {
        use GradientEngine::*;
        assert!(Auto.takes_nccl(&[true, true]).unwrap());
        assert!(!Auto.takes_nccl(&[true, false]).unwrap());
        assert!(!BurnCollective.takes_nccl(&[true, true]).unwrap());
        assert!(Nccl.takes_nccl(&[true, true]).unwrap());
        let error = Nccl.takes_nccl(&[true, false, false]).unwrap_err();
        assert!(
            error.to_string().contains("ranks [1, 2] cannot load"),
            "{error}"
        );
    }
}
