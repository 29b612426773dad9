//! What the `FusedAdam` tests share: a small module, deterministic inputs, a training loop, and
//! the comparison with Burn's own Adam (parameters and optimizer state, bit for bit).

use backend::FusedAdam;
use burn::module::{Module, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamConfig, AdamState, GradientsParams, Optimizer, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatElem;
use burn::tensor::{Tensor, TensorData};

/// Two weights (one used transposed, so its gradient is not in row-major order) larger than one
/// parallel block of the fused update, and a bias smaller than one.
#[derive(Module, Debug)]
pub struct Probe<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub weight_transposed: Param<Tensor<B, 2>>,
    pub bias: Param<Tensor<B, 1>>,
}

const INPUTS: usize = 300;
const OUTPUTS: usize = 250;

impl<B: Backend> Probe<B> {
    pub fn new(device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(uniform([INPUTS, OUTPUTS], 0.1, 1, device)),
            weight_transposed: Param::from_tensor(uniform([OUTPUTS, INPUTS], 0.1, 2, device)),
            bias: Param::from_tensor(uniform([OUTPUTS], 0.1, 3, device)),
        }
    }

    pub fn loss(&self, step: u64, device: &B::Device) -> Tensor<B, 1> {
        let x = uniform::<B, 2>([8, INPUTS], 2.0, 100 + step, device);
        let hidden = x.clone().matmul(self.weight.val())
            + x.matmul(self.weight_transposed.val().transpose())
            + self.bias.val().unsqueeze();
        hidden.tanh().powi_scalar(2).sum()
    }
}

/// A tensor of values spread over `[-scale, scale)` from a generator of its own (the backend's
/// random tensors share one seeded generator between the tests, which run in parallel).
pub fn uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    scale: f64,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f64> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_data(
        TensorData::new(values, shape).convert::<FloatElem<B>>(),
        device,
    )
}

/// Takes `steps` optimizer steps on `probe`, each on a fresh seeded batch.
pub fn train<B, O>(
    mut probe: Probe<B>,
    optimizer: &mut O,
    steps: std::ops::Range<u64>,
    device: &B::Device,
) -> Probe<B>
where
    B: AutodiffBackend,
    O: Optimizer<Probe<B>, B>,
{
    for step in steps {
        let gradients = GradientsParams::from_grads(probe.loss(step, device).backward(), &probe);
        // A learning rate that moves the weights visibly, with a warm-up-like change per step.
        probe = optimizer.step(0.01 / (step + 1) as f64, probe, gradients);
    }
    probe
}

/// Every parameter value as raw bits, in a fixed order.
pub fn parameter_bits<B: Backend>(probe: &Probe<B>) -> Vec<u64> {
    let mut bits = Vec::new();
    let data = [
        probe.weight.val().into_data(),
        probe.weight_transposed.val().into_data(),
        probe.bias.val().into_data(),
    ];
    for tensor in data {
        push_bits(tensor, &mut bits);
    }
    bits
}

/// Appends every value of `data`, widened to `f64` (exactly), as raw bits.
fn push_bits(data: TensorData, bits: &mut Vec<u64>) {
    let data = data.convert::<f64>();
    let values = data.as_slice::<f64>().expect("f64 after the conversion");
    bits.extend(values.iter().map(|v| v.to_bits()));
}

/// Adam's state for every parameter (its step count, then both moments as raw bits), in a fixed
/// order (the optimizer's record is a hash map).
pub fn state_bits<B, O>(optimizer: &OptimizerAdaptor<O, Probe<B>, B>, probe: &Probe<B>) -> Vec<u64>
where
    B: AutodiffBackend,
    O: SimpleOptimizer<
            B::InnerBackend,
            State<1> = AdamState<B::InnerBackend, 1>,
            State<2> = AdamState<B::InnerBackend, 2>,
        >,
{
    let mut records = optimizer.to_record();
    let mut bits = Vec::new();
    for id in [probe.weight.id, probe.weight_transposed.id] {
        let state = records.remove(&id).expect("a state per parameter");
        push_moment_bits(state.into_state::<2>(), &mut bits);
    }
    let state = records
        .remove(&probe.bias.id)
        .expect("a state per parameter");
    push_moment_bits(state.into_state::<1>(), &mut bits);
    assert!(records.is_empty());
    bits
}

/// Appends one parameter's Adam state: its step count, then both moments' values as raw bits.
fn push_moment_bits<B: Backend, const D: usize>(state: AdamState<B, D>, bits: &mut Vec<u64>) {
    let momentum = state.momentum;
    assert!(momentum.max_moment_2.is_none());
    bits.push(momentum.time as u64);
    for moment in [momentum.moment_1, momentum.moment_2] {
        push_bits(moment.into_data(), bits);
    }
}

/// Trains the same module for four steps under Burn's Adam and under [`FusedAdam`] and asserts
/// the parameters and the optimizer state agree bit for bit. `fused` says whether the module's
/// tensors are ones the fused pass covers (asserted, so the comparison cannot pass by falling
/// back to Burn's Adam unnoticed).
pub fn same_as_burn_adam<B: AutodiffBackend>(fused: bool) {
    let device = Default::default();
    let start = Probe::<B>::new(&device);
    let mut burn_adam = AdamConfig::new().init::<B, Probe<B>>();
    let mut fused_adam = FusedAdam::default().init::<B, Probe<B>>();
    assert_eq!(FusedAdam::fuses(&start.weight.val().inner()), fused);
    let by_burn = train(start.clone(), &mut burn_adam, 0..4, &device);
    let by_fused = train(start.clone(), &mut fused_adam, 0..4, &device);

    let (before, after) = (parameter_bits(&start), parameter_bits(&by_burn));
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(moved > after.len() * 9 / 10, "only {moved} values moved");
    assert!(
        parameter_bits(&by_fused) == after,
        "parameters differ from Burn's Adam"
    );
    assert!(
        state_bits(&fused_adam, &start) == state_bits(&burn_adam, &start),
        "optimizer state differs from Burn's Adam"
    );
}
