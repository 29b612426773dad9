//! The training backend at a float precision chosen at run time (`trainer bench --precision`).
//!
//! In Burn 0.21 a tensor's float type is its device's default float type, which a process fixes
//! once per device, before the first tensor (`burn::tensor::set_default_dtypes`); the backend's
//! type parameter only gives the default's default. [`at_precision`] sets the device's float
//! type and runs the same generic code on the backend type of that precision. The CPU backend
//! has `f32` and `f64` (the latter proves the code reads tensors of any element type); the CUDA
//! builds have `f32`, `bf16` and `f16`; wgpu builds `f32`. Burn has no autocast: at `bf16` every
//! tensor is `bf16`, master weights included.

use burn::tensor::backend::{AutodiffBackend, DeviceError};
use burn::tensor::{Element, FloatDType, get_device_settings, set_default_dtypes};

/// A float precision for the training backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// 32-bit floats (on CUDA, matmuls may run in TF32 on tensor cores).
    F32,
    /// 64-bit floats (CPU backend only).
    F64,
    /// bfloat16 everywhere, weights included (CUDA builds only).
    Bf16,
    /// IEEE half precision everywhere (CUDA builds only).
    F16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// Work generic over the training backend, for [`at_precision`] to run on the backend of a
/// precision chosen at run time.
pub trait AtPrecision {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and its default device.
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

/// Why [`at_precision`] could not run its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrecisionError {
    /// The compiled-in backend has no such precision.
    Unsupported(Precision),
    /// The device refused the float type (as Burn words it).
    Device(String),
    /// The device already made tensors of another float type in this process.
    DeviceTaken {
        /// The precision asked for.
        wanted: Precision,
        /// The device's float type, as Burn prints it.
        current: String,
    },
}

impl std::fmt::Display for PrecisionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrecisionError::Unsupported(precision) => {
                let offered = if cfg!(feature = "cuda-base") {
                    "f32, bf16, f16"
                } else if cfg!(feature = "cube") {
                    "f32 (bf16 and f16 need a CUDA build)"
                } else {
                    "f32, f64 (bf16 and f16 need a CUDA build)"
                };
                write!(
                    f,
                    "precision {precision} is not available on {}: it offers {offered}",
                    crate::BACKEND_NAME
                )
            }
            PrecisionError::Device(reason) => write!(f, "{reason}"),
            PrecisionError::DeviceTaken { wanted, current } => write!(
                f,
                "precision {wanted}: this process already uses the device at {current}, and a \
                 device has one float type per process"
            ),
        }
    }
}

impl std::error::Error for PrecisionError {}

/// Fixes the default device's float type to `dtype` and runs `work` on backend `B`.
fn run_at<B: AutodiffBackend, W: AtPrecision>(
    work: W,
    precision: Precision,
    dtype: FloatDType,
) -> Result<W::Output, PrecisionError> {
    let device = B::Device::default();
    let int = <B::IntElem as Element>::dtype();
    match set_default_dtypes::<B>(&device, dtype, int) {
        Ok(()) => {}
        Err(DeviceError::AlreadyInitialized { .. }) => {
            let current = get_device_settings::<B>(&device).float_dtype;
            if current != dtype {
                return Err(PrecisionError::DeviceTaken {
                    wanted: precision,
                    current: format!("{current:?}"),
                });
            }
        }
        Err(other) => return Err(PrecisionError::Device(other.to_string())),
    }
    Ok(work.run::<B>(&device))
}

/// Runs `work` on the training backend of `precision` and its default device, whose float type
/// it fixes for the rest of the process.
pub fn at_precision<W: AtPrecision>(
    precision: Precision,
    work: W,
) -> Result<W::Output, PrecisionError> {
    #[cfg(not(feature = "cube"))]
    {
        use burn::backend::{Autodiff, NdArray};
        match precision {
            Precision::F32 => run_at::<crate::Train, W>(work, precision, FloatDType::F32),
            Precision::F64 => run_at::<Autodiff<NdArray<f64>>, W>(work, precision, FloatDType::F64),
            other => Err(PrecisionError::Unsupported(other)),
        }
    }
    #[cfg(feature = "cuda-base")]
    {
        use burn::backend::{Autodiff, Cuda};
        use burn::tensor::{bf16, f16};
        match precision {
            Precision::F32 => run_at::<crate::Train, W>(work, precision, FloatDType::F32),
            Precision::Bf16 => {
                run_at::<Autodiff<Cuda<bf16, i32>>, W>(work, precision, FloatDType::BF16)
            }
            Precision::F16 => {
                run_at::<Autodiff<Cuda<f16, i32>>, W>(work, precision, FloatDType::F16)
            }
            other => Err(PrecisionError::Unsupported(other)),
        }
    }
    #[cfg(all(feature = "cube", not(feature = "cuda-base")))]
    match precision {
        Precision::F32 => run_at::<crate::Train, W>(work, precision, FloatDType::F32),
        other => Err(PrecisionError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Tensor};

    /// Reports the element type of a tensor made on the chosen backend.
    struct FloatType;

    impl AtPrecision for FloatType {
        type Output = DType;
        fn run<B: AutodiffBackend>(self, device: &B::Device) -> DType {
            Tensor::<B, 1>::from_floats([1.0, 2.0], device).dtype()
        }
    }

    #[test]
    fn each_precision_runs_on_a_backend_of_that_float_type_or_is_refused() {
        // The first call fixes the device at f32 for the rest of the process (if no other test
        // did before): another float type is then refused.
        assert_eq!(at_precision(Precision::F32, FloatType), Ok(DType::F32));
        // A second float type the build offers (wgpu builds offer only f32).
        let other = if cfg!(feature = "cuda-base") {
            Some(Precision::Bf16)
        } else if cfg!(feature = "cube") {
            None
        } else {
            Some(Precision::F64)
        };
        if let Some(other) = other {
            let taken = at_precision(other, FloatType).unwrap_err();
            assert!(
                taken.to_string().contains("already uses the device at F32"),
                "{taken}"
            );
        }
        if cfg!(not(feature = "cuda-base")) {
            let refused = at_precision(Precision::Bf16, FloatType).unwrap_err();
            let backend = crate::BACKEND_NAME.split(' ').next().unwrap();
            assert!(
                refused
                    .to_string()
                    .contains(&format!("bf16 is not available on {backend}")),
                "{refused}"
            );
        }
    }
}
