//! `FusedAdam` hands tensors the fused pass does not cover (here `f64`) to Burn's Adam unchanged.
//!
//! A test binary of its own: a device's default float type is fixed for the whole process by the
//! first tensor made on it, so `f64` and `f32` tensors cannot be made side by side on the CPU.

mod common;

use burn::backend::{Autodiff, NdArray};

#[test]
fn f64_steps_go_through_burn_adam() {
    common::same_as_burn_adam::<Autodiff<NdArray<f64>>>(false);
}
