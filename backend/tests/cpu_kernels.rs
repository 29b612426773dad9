//! The CPU backend's patched kernels (vendor/burn-ndarray, vendor/README.md): the one-pass GELU
//! and its gradient, and dropout's Bernoulli masks drawn in parallel blocks. On the CUDA build
//! these run Burn's own kernels, so the checks hold there too.

use backend::{Compute, Train};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

const POINTS: [f32; 9] = [-6.0, -3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.5, 7.0];

fn values<const D: usize, B: Backend>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn gelu_is_the_erf_gelu_and_its_gradient_matches_finite_differences() {
    let device = Default::default();
    let x = Tensor::<Compute, 1>::from_data(TensorData::from(POINTS), &device);
    // x·Φ(x) (Φ the standard normal CDF) from PyTorch's float64 `gelu`.
    let expected: [f64; 9] = [
        -5.9195259e-9,
        -4.0496941e-3,
        -1.0021080e-1,
        -1.5426877e-1,
        0.0,
        1.8537343e-1,
        8.4134475e-1,
        2.4844758,
        7.0,
    ];
    for (got, want) in values(gelu(x)).iter().zip(expected) {
        assert!(
            (f64::from(*got) - want).abs() < 1e-5,
            "gelu: {got} vs {want}"
        );
    }

    let x = Tensor::<Train, 1>::from_data(TensorData::from(POINTS), &device).require_grad();
    let grads = gelu(x.clone()).sum().backward();
    let analytic = values(x.grad(&grads).unwrap());
    let h = 1e-2f32;
    let at = |shift: f32| {
        let shifted: Vec<f32> = POINTS.iter().map(|p| p + shift).collect();
        values(gelu(Tensor::<Compute, 1>::from_data(
            TensorData::from(shifted.as_slice()),
            &device,
        )))
    };
    let (up, down) = (at(h), at(-h));
    for i in 0..POINTS.len() {
        let numeric = (up[i] - down[i]) / (2.0 * h);
        assert!(
            (analytic[i] - numeric).abs() < 1e-3,
            "gelu'({}) = {} but finite differences give {numeric}",
            POINTS[i],
            analytic[i]
        );
    }
}

#[test]
fn bernoulli_masks_keep_the_rate_and_depend_only_on_the_seed() {
    let device = Default::default();
    // Several blocks of the parallel generator (65,536 elements each), and a ragged last one.
    let shape = [7, 100_003];
    let draw = |seed: u64, keep: f64| {
        Compute::seed(&device, seed);
        values(Tensor::<Compute, 2>::random(
            shape,
            Distribution::Bernoulli(keep),
            &device,
        ))
    };
    let mask = draw(5, 0.9);
    assert!(mask.iter().all(|&v| v == 0.0 || v == 1.0));
    let rate = mask.iter().sum::<f32>() / mask.len() as f32;
    assert!((rate - 0.9).abs() < 0.002, "kept {rate}, not 0.9");
    // No two blocks are the same stream.
    let block = 1 << 16;
    assert_ne!(mask[..block], mask[block..2 * block]);
    assert_eq!(draw(5, 0.9), mask, "the same seed gave another mask");
    assert_ne!(draw(6, 0.9), mask, "another seed gave the same mask");
    assert!(draw(5, 0.0).iter().all(|&v| v == 0.0));
    assert!(draw(5, 1.0).iter().all(|&v| v == 1.0));
}
