//! `FusedAdam` against Burn's own Adam on the fused path (`f32` tensors of the CPU backend): the
//! same parameters and optimizer state, bit for bit, and checkpoints that move between the two.

mod common;

use backend::FusedAdam;
use burn::backend::{Autodiff, NdArray};
use burn::optim::{AdamConfig, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use common::{Probe, parameter_bits, same_as_burn_adam, state_bits, train};

/// The optimizer's state as the checkpoint writes it.
fn state_bytes<B: AutodiffBackend, O: Optimizer<Probe<B>, B>>(optimizer: &O) -> Vec<u8> {
    Recorder::<B>::record(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::default(),
        optimizer.to_record(),
        (),
    )
    .expect("recording the optimizer")
}

#[test]
fn fused_f32_steps_equal_burn_adam_bit_for_bit() {
    same_as_burn_adam::<Autodiff<NdArray<f32>>>(true);
}

#[test]
fn a_checkpoint_of_burn_adam_resumes_under_fused_adam() {
    type B = Autodiff<NdArray<f32>>;
    let device = Default::default();
    let mut burn_adam = AdamConfig::new().init::<B, Probe<B>>();
    let halfway = train(Probe::<B>::new(&device), &mut burn_adam, 0..2, &device);
    assert!(FusedAdam::fuses(&halfway.weight.val().inner()));

    let record = Recorder::<B>::load(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::default(),
        state_bytes(&burn_adam),
        &device,
    )
    .expect("loading Burn Adam's state as FusedAdam's");
    let mut fused_adam = FusedAdam::default()
        .init::<B, Probe<B>>()
        .load_record(record);

    let by_burn = train(halfway.clone(), &mut burn_adam, 2..4, &device);
    let by_fused = train(halfway.clone(), &mut fused_adam, 2..4, &device);
    assert!(parameter_bits(&by_fused) == parameter_bits(&by_burn));
    assert!(state_bits(&fused_adam, &halfway) == state_bits(&burn_adam, &halfway));
}
