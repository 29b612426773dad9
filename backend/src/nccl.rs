//! NCCL all-reduce between training processes on CUDA builds: one communicator per process,
//! one GPU per process, inside a node and across nodes alike (NCCL picks NVLink, PCIe,
//! InfiniBand or sockets itself).
//!
//! The gradients arrive as one flat host vector (the trainer flattens them for every engine);
//! they are copied to the process's GPU, averaged across the ranks with `ncclAllReduce`
//! (`ncclAvg`), and copied back. The host copies cost two PCIe transfers per step; the
//! reduction runs at NCCL's bus bandwidth instead of burn-collective's WebSocket transport.
//!
//! libnccl is loaded at first use (cudarc's dynamic loading, no NCCL at build time). cudarc
//! looks for `libnccl.so` and `libnccl.so.<CUDA major>`, not `libnccl.so.2`, the name NCCL's
//! packages install: put a `libnccl.so` link to it on `LD_LIBRARY_PATH` (docs/gpu.md).
//! [`available`] says whether it was found; a missing libnccl is an error, never a crash.
//!
//! NCCL calls block without a deadline of their own, so the communicator lives on a worker
//! thread and every call waits at most the group's timeout: a rank that died or hangs ends
//! the others with an error, never a hang. CPU builds have no NCCL: [`new_id`] and
//! [`NcclGroup::join`] return an error saying so.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// Bytes of an NCCL unique id: rank 0 makes one with [`new_id`] and every rank passes the same
/// bytes to [`NcclGroup::join`].
pub const ID_BYTES: usize = 128;

#[cfg(feature = "cuda-base")]
use with_cuda as engine;
#[cfg(not(feature = "cuda-base"))]
use without_cuda as engine;

/// Whether this process can all-reduce through NCCL: a CUDA build that finds libnccl.
pub fn available() -> bool {
    engine::library_found()
}

/// A fresh NCCL unique id (rank 0's job; the others receive its bytes).
pub fn new_id() -> Result<[u8; ID_BYTES]> {
    engine::new_id()
}

/// This process's member of an NCCL communicator, served by a worker thread (see the module
/// docs). Every rank must call [`NcclGroup::mean`] the same number of times with the same length.
#[derive(Debug)]
pub struct NcclGroup {
    rank: usize,
    size: usize,
    timeout: Duration,
    requests: Sender<Vec<f32>>,
    replies: Receiver<Result<Vec<f32>>>,
}

impl NcclGroup {
    /// Joins rank `rank` of `size` into the communicator `id` on GPU `ordinal`, waiting at most
    /// `timeout` for every rank to arrive.
    pub fn join(
        id: [u8; ID_BYTES],
        rank: usize,
        size: usize,
        ordinal: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let (requests, requests_in) = mpsc::channel();
        let (replies_out, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("nccl-rank-{rank}"))
            .spawn(move || engine::serve(id, rank, size, ordinal, requests_in, replies_out))
            .context("starting the NCCL worker")?;
        let group = NcclGroup {
            rank,
            size,
            timeout,
            requests,
            replies,
        };
        group.reply(&format!("joining the NCCL communicator on GPU {ordinal}"))?;
        tracing::info!(rank, size, ordinal, "joined the NCCL communicator");
        Ok(group)
    }

    /// The element-wise mean of every rank's `values`.
    pub fn mean(&self, values: Vec<f32>, what: &str) -> Result<Vec<f32>> {
        self.requests
            .send(values)
            .map_err(|_| anyhow!("{}: the NCCL worker has stopped", self.who(what)))?;
        self.reply(what)
    }

    fn who(&self, what: &str) -> String {
        format!("rank {} of {}: {what} (NCCL)", self.rank, self.size)
    }

    fn reply(&self, what: &str) -> Result<Vec<f32>> {
        match self.replies.recv_timeout(self.timeout) {
            Ok(reply) => reply.with_context(|| self.who(what)),
            Err(RecvTimeoutError::Timeout) => bail!(
                "{} got no answer within {} s: a peer rank died, hangs or never started",
                self.who(what),
                self.timeout.as_secs_f64()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{}: the NCCL worker stopped", self.who(what))
            }
        }
    }
}

/// A one-rank NCCL all-reduce on GPU `ordinal`: whether libnccl loads, a communicator forms and
/// an all-reduce returns its input (the `doctor` check).
pub fn self_check(ordinal: usize) -> Result<()> {
    let group = NcclGroup::join(new_id()?, 0, 1, ordinal, Duration::from_secs(120))?;
    let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let mean = group.mean(values.clone(), "the self-check's all-reduce")?;
    if mean != values {
        bail!("a one-rank all-reduce changed its input");
    }
    Ok(())
}

/// CPU builds: no NCCL.
#[cfg(not(feature = "cuda-base"))]
mod without_cuda {
    use super::*;

    const WITHOUT_CUDA: &str =
        "this binary was built without CUDA: NCCL needs a `--features cuda` build";

    pub fn library_found() -> bool {
        false
    }

    pub fn new_id() -> Result<[u8; ID_BYTES]> {
        bail!("{WITHOUT_CUDA}")
    }

    pub fn serve(
        _id: [u8; ID_BYTES],
        _rank: usize,
        _size: usize,
        _ordinal: usize,
        _requests: Receiver<Vec<f32>>,
        replies: Sender<Result<Vec<f32>>>,
    ) {
        let _ = replies.send(Err(anyhow!(WITHOUT_CUDA)));
    }
}

/// CUDA builds: cudarc's NCCL and driver bindings.
#[cfg(feature = "cuda-base")]
mod with_cuda {
    use super::*;
    use cudarc::driver::CudaContext;
    use cudarc::nccl::safe::{Comm, Id, ReduceOp};

    pub fn library_found() -> bool {
        // cudarc panics when it cannot load libnccl; the panic's message (printed once) lists
        // the names it searched.
        std::panic::catch_unwind(cudarc::nccl::result::get_nccl_version)
            .is_ok_and(|version| version.is_ok())
    }

    fn ensure_found() -> Result<()> {
        if !library_found() {
            bail!(
                "libnccl was not found: put a `libnccl.so` link to NCCL's libnccl.so.2 on \
                 LD_LIBRARY_PATH (docs/gpu.md), or set train.all_reduce = \"burn-collective\""
            );
        }
        Ok(())
    }

    pub fn new_id() -> Result<[u8; ID_BYTES]> {
        ensure_found()?;
        let id = Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
        Ok(id.internal().map(|byte| byte as u8))
    }

    fn communicator(id: [u8; ID_BYTES], rank: usize, size: usize, ordinal: usize) -> Result<Comm> {
        ensure_found()?;
        let context =
            CudaContext::new(ordinal).map_err(|e| anyhow!("CUDA device {ordinal}: {e:?}"))?;
        let stream = context
            .new_stream()
            .map_err(|e| anyhow!("a CUDA stream on device {ordinal}: {e:?}"))?;
        let id = Id::uninit(id.map(|byte| byte as std::ffi::c_char));
        Comm::from_rank(stream, rank, size, id).map_err(|e| anyhow!("ncclCommInitRank: {e:?}"))
    }

    fn average(comm: &Comm, values: &[f32]) -> Result<Vec<f32>> {
        let stream = comm.stream();
        let mut buffer = stream
            .clone_htod(values)
            .map_err(|e| anyhow!("copying to the GPU: {e:?}"))?;
        comm.all_reduce_in_place(&mut buffer, &ReduceOp::Avg)
            .map_err(|e| anyhow!("ncclAllReduce: {e:?}"))?;
        let mean = stream
            .clone_dtoh(&buffer)
            .map_err(|e| anyhow!("copying from the GPU: {e:?}"))?;
        stream
            .synchronize()
            .map_err(|e| anyhow!("waiting for the all-reduce: {e:?}"))?;
        Ok(mean)
    }

    /// The worker thread: forms the communicator (its first reply), then averages every request.
    pub fn serve(
        id: [u8; ID_BYTES],
        rank: usize,
        size: usize,
        ordinal: usize,
        requests: Receiver<Vec<f32>>,
        replies: Sender<Result<Vec<f32>>>,
    ) {
        let comm = match communicator(id, rank, size, ordinal) {
            Ok(comm) => comm,
            Err(error) => {
                let _ = replies.send(Err(error));
                return;
            }
        };
        if replies.send(Ok(Vec::new())).is_err() {
            return;
        }
        for values in requests {
            if replies.send(average(&comm, &values)).is_err() {
                return;
            }
        }
    }
}

#[cfg(all(test, not(feature = "cuda-base")))]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_build_says_it_has_no_nccl() {
        assert!(!available());
        let error = new_id().expect_err("no NCCL on the CPU build").to_string();
        assert!(error.contains("--features cuda"), "{error}");
        let error = NcclGroup::join([0; ID_BYTES], 0, 2, 0, Duration::from_secs(1))
            .expect_err("no NCCL on the CPU build");
        let error = format!("{error:#}");
        assert!(error.starts_with("rank 0 of 2: joining"), "{error}");
        assert!(error.contains("without CUDA"), "{error}");
    }
}
