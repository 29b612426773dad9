//! The Burn backend that `detector` and `trainer` run on, chosen once at build time, and a
//! self-check that proves a build computes correctly on the machine it runs on.
//!
//! * default build: [`burn::backend::NdArray`] on the CPU;
//! * `--features cuda`: [`burn::backend::Cuda`] (burn 0.21 compiles its kernels with NVRTC at run
//!   time, so the build needs no CUDA toolkit; the GPU host needs the driver and libnvrtc), with
//!   Burn's kernel fusion; `--features cuda-without-fusion`: the same without fusion;
//! * `--features wgpu`: [`burn::backend::Wgpu`] (Vulkan, Metal, DirectX 12), with fusion. Its
//!   kernels come from the same CubeCL code as CUDA's, so on a machine without a GPU, Mesa's
//!   lavapipe Vulkan driver runs the GPU code path on the CPU (`scripts/test-wgpu`).
//!
//! Model code stays generic over `B: Backend`; only binaries name [`Compute`] or [`Train`].
//! [`FusedAdam`] is Burn's Adam in one pass per parameter on the CPU backend; [`nccl`] averages
//! data-parallel gradients through NCCL on CUDA builds.

mod adam;
mod kernels;
pub mod nccl;
mod precision;

pub use adam::FusedAdam;
pub use kernels::{AutotuneEffort, KernelOptions};
pub use precision::{AtPrecision, Precision, PrecisionError, at_precision};

use std::process::ExitCode;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::Device;
use burn::tensor::backend::{Backend, Device as _};
use burn::tensor::{Tensor, TensorData};

/// The backend used for inference (no gradients).
#[cfg(not(feature = "cube"))]
pub type Compute = burn::backend::NdArray<f32>;
/// The backend used for inference (no gradients).
#[cfg(feature = "cuda-base")]
pub type Compute = burn::backend::Cuda<f32, i32>;
/// The backend used for inference (no gradients).
#[cfg(all(feature = "wgpu", not(feature = "cuda-base")))]
pub type Compute = burn::backend::Wgpu<f32, i32>;

/// The backend used for training: [`Compute`] with automatic differentiation.
pub type Train = Autodiff<Compute>;

/// Human-readable name of the compiled-in backend.
pub const BACKEND_NAME: &str = if cfg!(feature = "cuda") {
    "cuda (burn-cuda 0.21, f32, fusion)"
} else if cfg!(feature = "cuda-base") {
    "cuda (burn-cuda 0.21, f32, no fusion)"
} else if cfg!(feature = "wgpu") {
    "wgpu (burn-wgpu 0.21, f32, fusion)"
} else {
    "ndarray (CPU, f32)"
};

/// Whether [`Compute`] has a fused attention kernel behind `burn::tensor::module::attention`
/// (CubeCL backends: flash attention, autotuned against separate kernels). The CPU backend runs
/// that operation as separate kernels with extra masking work, slower than plain matmul + softmax.
pub const FUSED_ATTENTION: bool = cfg!(feature = "cube");

/// The device every stage uses: the first GPU on CUDA builds, the GPU wgpu picks first on wgpu
/// builds, the CPU otherwise.
pub fn default_device() -> Device<Compute> {
    Default::default()
}

/// The device a process with node-local rank `local_rank` computes on: device `local_rank % n`
/// of the `n` it sees. Eight ranks on a node with eight visible GPUs take one each; a rank that
/// sees only its own GPU (one GPU per Kubernetes pod, `srun --gpus-per-task=1`) takes it. The
/// CPU backend has one device.
pub fn device_for_local_rank(local_rank: usize) -> Device<Compute> {
    let mut id = default_device().to_id();
    let count = Compute::device_count(id.type_id).max(1);
    // Fewer than 2^16 devices: the remainder fits the id's index.
    id.index_id = (local_rank % count) as u16;
    Device::<Compute>::from_id(id)
}

/// The index of `device` among the devices of its kind this process sees (CUDA's ordinal).
pub fn device_ordinal(device: &Device<Compute>) -> usize {
    usize::from(device.to_id().index_id)
}

/// Runs `work` on a worker of a dedicated rayon pool (one thread per core, or `RAYON_NUM_THREADS`)
/// and returns its result. The CPU backend splits large operations over the current rayon pool;
/// called from the main thread, each split hands the work to the global pool and sleeps until
/// it is done. Issued from a pool worker instead, the issuing thread computes its share and
/// no wake-up round trip is paid per operation. Threads started inside `work` (data readers,
/// collectives) use the global pool, so blocking this worker on them cannot starve them.
/// Runs `work` on the calling thread when the pool cannot be built.
pub fn on_compute_threads<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    // The issuing thread drops long autodiff graphs: give it more than the main thread's 8 MiB
    // (address space only; pages are touched as used).
    const STACK_BYTES: usize = 64 << 20;
    match rayon::ThreadPoolBuilder::new()
        .thread_name(|index| format!("compute-{index}"))
        .stack_size(STACK_BYTES)
        .build()
    {
        Ok(pool) => pool.install(work),
        Err(error) => {
            tracing::warn!(%error, "no compute thread pool; running on the calling thread");
            work()
        }
    }
}

/// The outcome of [`self_check`].
#[derive(Debug, Clone)]
pub struct SelfCheck {
    /// [`BACKEND_NAME`].
    pub backend: &'static str,
    /// The device, as Burn prints it.
    pub device: String,
    /// Side of the square matrices multiplied.
    pub size: usize,
    /// Largest absolute difference between the device's matmul and a float64 host matmul, over
    /// every entry (size <= 256) or an even sample of 65,536 entries.
    pub matmul_max_error: f64,
    /// Largest absolute difference between the autodiff gradient of `sum(x^2 · w)` and `2x·w`.
    pub gradient_max_error: f64,
    /// Seconds of the first matmul, including any kernel compilation and autotuning.
    pub first_call_s: f64,
    /// Seconds of the same matmul once warm.
    pub warm_call_s: f64,
}

impl SelfCheck {
    /// Tolerance for both errors. On the CPU, float32 accumulation over `size` terms of values in
    /// [-1, 1] stays far below `1e-5 * size`. On CUDA, burn's float32 matmul may run on tensor
    /// cores in TF32 (10-bit mantissa): measured on an H100, 6.1e-3 at size 256, so the bound is
    /// `2e-3 * sqrt(size)`, still hundreds of times below the error of a broken kernel
    /// (~sqrt(size)/3).
    pub fn tolerance(&self) -> f64 {
        if cfg!(feature = "cuda-base") {
            2e-3 * (self.size as f64).sqrt()
        } else {
            1e-5 * self.size as f64
        }
    }

    /// Whether both results are within [`SelfCheck::tolerance`].
    pub fn passed(&self) -> bool {
        self.matmul_max_error <= self.tolerance() && self.gradient_max_error <= self.tolerance()
    }
}

/// Deterministic values in [-1, 1) from a 64-bit LCG, so the check needs no RNG state.
fn pseudo_random(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Multiplies two `size`×`size` matrices on the device and differentiates a small expression
/// through [`Train`], comparing both against host arithmetic.
pub fn self_check(size: usize) -> SelfCheck {
    let device = default_device();
    let (a, b) = (pseudo_random(size * size, 1), pseudo_random(size * size, 2));
    // The host reference costs `size` multiply-adds per entry: check every entry of small
    // matrices and an even sample of at most 65,536 entries of large ones.
    let stride = (size * size).div_ceil(65_536);
    let checked: Vec<usize> = (0..size * size).step_by(stride).collect();
    let expected: Vec<f64> = checked
        .iter()
        .map(|&ij| {
            let (i, j) = (ij / size, ij % size);
            (0..size)
                .map(|k| a[i * size + k] as f64 * b[k * size + j] as f64)
                .sum()
        })
        .collect();
    let sampled = |full: Vec<f32>| -> Vec<f32> { checked.iter().map(|&ij| full[ij]).collect() };
    let upload = |values: &[f32]| {
        Tensor::<Compute, 2>::from_data(TensorData::new(values.to_vec(), [size, size]), &device)
    };
    let matmul = || -> Vec<f32> {
        upload(&a)
            .matmul(upload(&b))
            .into_data()
            .to_vec()
            .expect("float32 tensor")
    };
    let start = Instant::now();
    let first = matmul();
    let first_call_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let warm = matmul();
    let warm_call_s = start.elapsed().as_secs_f64();

    let x = Tensor::<Train, 2>::from_data(TensorData::new(a.clone(), [size, size]), &device)
        .require_grad();
    let w = Tensor::<Train, 2>::from_data(TensorData::new(b.clone(), [size, size]), &device);
    let loss = (x.clone() * x.clone() * w).sum();
    let gradients = loss.backward();
    let gradient: Vec<f32> = x
        .grad(&gradients)
        .expect("x requires a gradient")
        .into_data()
        .to_vec()
        .expect("float32 tensor");
    let expected_gradient: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &w)| 2.0 * x as f64 * w as f64)
        .collect();

    SelfCheck {
        backend: BACKEND_NAME,
        device: format!("{device:?}"),
        size,
        matmul_max_error: max_abs_diff(&sampled(first), &expected)
            .max(max_abs_diff(&sampled(warm), &expected)),
        gradient_max_error: max_abs_diff(&gradient, &expected_gradient),
        first_call_s,
        warm_call_s,
    }
}

impl std::fmt::Display for SelfCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed() { "ok" } else { "FAILED" };
        writeln!(f, "backend            {}", self.backend)?;
        writeln!(f, "device             {}", self.device)?;
        writeln!(
            f,
            "matmul {0}x{0}      max error {1:.2e} (tolerance {2:.1e})",
            self.size,
            self.matmul_max_error,
            self.tolerance()
        )?;
        writeln!(
            f,
            "autodiff gradient  max error {:.2e}",
            self.gradient_max_error
        )?;
        writeln!(
            f,
            "first call         {:.3} s (includes kernel compilation on GPUs)",
            self.first_call_s
        )?;
        writeln!(f, "warm call          {:.4} s", self.warm_call_s)?;
        write!(f, "self-check         {verdict}")
    }
}

/// Flags of the `doctor` subcommand that every GPU-capable binary offers.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Side of the square matrices multiplied in the check.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub size: u16,
}

/// Runs `doctor`: prints the [`self_check`] report and, on CUDA builds, a one-rank NCCL check
/// ([`nccl::self_check`]; a missing libnccl is reported, not failed); fails when a result is off.
pub fn doctor(args: &DoctorArgs) -> ExitCode {
    let check = self_check(usize::from(args.size));
    println!("{check}");
    let mut passed = check.passed();
    if cfg!(feature = "cuda-base") {
        if !nccl::available() {
            println!(
                "nccl               not found (multi-GPU training needs it: a libnccl.so link on \
                 LD_LIBRARY_PATH, docs/gpu.md)"
            );
        } else {
            match nccl::self_check(device_ordinal(&default_device())) {
                Ok(()) => println!("nccl               ok (a one-rank all-reduce)"),
                Err(error) => {
                    println!("nccl               FAILED: {error:#}");
                    passed = false;
                }
            }
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_values_are_spread_over_minus_one_to_one() {
        let v = pseudo_random(10_000, 7);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(v.iter().any(|&x| x < -0.9) && v.iter().any(|&x| x > 0.9));
    }

    #[test]
    fn self_check_passes_on_the_compiled_backend() {
        let check = self_check(48);
        assert!(check.passed(), "{check:?}");
        assert!(check.matmul_max_error < 1e-3);
    }

    #[test]
    fn doctor_flags_default_to_256_and_refuse_sizes_outside_1_to_4096() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            doctor: DoctorArgs,
        }
        assert_eq!(Cli::try_parse_from(["doctor"]).unwrap().doctor.size, 256);
        for bad in ["0", "4097", "big"] {
            let err = Cli::try_parse_from(["doctor", "--size", bad])
                .err()
                .expect("refused");
            assert!(err.to_string().contains("--size"), "{err}");
        }
    }

    #[cfg(not(feature = "cube"))]
    #[test]
    fn every_local_rank_of_the_cpu_build_shares_its_one_device() {
        for rank in [0, 1, 7] {
            assert_eq!(device_for_local_rank(rank), default_device());
        }
        assert_eq!(device_ordinal(&default_device()), 0);
    }

    #[test]
    fn max_abs_diff_finds_the_largest_gap() {
        assert_eq!(max_abs_diff(&[1.0, 2.0, 3.0], &[1.0, 2.5, 2.0]), 1.0);
    }
}
