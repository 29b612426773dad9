//! The pre-training batch and losses: hand-computed loss values, the conditional mask (no masked
//! loss on ITM negatives), MOC targets taken from the detector's labels, padding to fixed shapes
//! that changes no loss, and a small model whose four losses all fall when trained on a fixed set.

use backend::{Compute, Train};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::batch::{
    FixedShapes, PretrainSample, build_pretrain_batch, build_shaped_pretrain_batch,
};
use trainer::losses::{LossWeights, masked_cross_entropy, pretrain_losses};
use trainer::model::config::EncoderConfig;
use trainer::model::imagebert::{ImageBert, ImageBertConfig};
use trainer::objectives::{IGNORE, MaskingConfig};
use wordpiece::SpecialTokens;

const SPECIAL: SpecialTokens = SpecialTokens {
    pad: 0,
    unk: 1,
    cls: 2,
    sep: 3,
    mask: 4,
};
const VOCAB: usize = 40;
const FEATURE_DIM: usize = 6;
const CLASSES: usize = 5;

fn value(t: Tensor<Compute, 1>) -> f32 {
    t.into_data().to_vec::<f32>().unwrap()[0]
}

#[test]
fn masked_cross_entropy_matches_hand_computation_and_skips_ignored_labels() {
    let device = Default::default();
    // Two positions; logits (0, ln 3) -> p = (1/4, 3/4). Labels 1 and IGNORE.
    let logits = Tensor::<Compute, 2>::from_data(
        TensorData::new(vec![0.0f32, 3f32.ln(), 5.0, -5.0], [2, 2]),
        &device,
    );
    let labels =
        Tensor::<Compute, 1, Int>::from_data(TensorData::new(vec![1i64, IGNORE], [2]), &device);
    let loss = value(masked_cross_entropy(logits.clone(), labels));
    assert!((loss - (4.0f32 / 3.0).ln()).abs() < 1e-6, "{loss}");
    let none =
        Tensor::<Compute, 1, Int>::from_data(TensorData::new(vec![IGNORE, IGNORE], [2]), &device);
    assert_eq!(value(masked_cross_entropy(logits, none)), 0.0);
}

fn tiny_config() -> ImageBertConfig {
    ImageBertConfig {
        encoder: EncoderConfig {
            vocab_size: VOCAB,
            hidden_size: 32,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 32,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            dropout: 0.0,
        },
        region_feature_dim: FEATURE_DIM,
        num_object_classes: CLASSES,
    }
}

/// Sample `i` has class `i % 5`: its caption words come from that class's six words and its
/// regions' features have that class's dimension hot, so text and image agree for a matched pair
/// and the model can learn all four tasks.
fn sample(i: usize, rng: &mut impl Rng) -> PretrainSample {
    let class = (i % CLASSES) as u32;
    let words = 5 + (i % 4);
    let mut text_ids = vec![SPECIAL.cls];
    text_ids.extend((0..words).map(|w| 10 + class * 6 + ((i + w) % 6) as u32));
    text_ids.push(SPECIAL.sep);
    let regions = 3 + i % 3;
    let mut region_features = Vec::new();
    for r in 0..regions {
        region_features.extend((0..FEATURE_DIM).map(|d| {
            if d == class as usize {
                1.0
            } else {
                0.1 * ((r + d) % 3) as f32
            }
        }));
    }
    PretrainSample {
        text_ids,
        region_features,
        region_boxes: (0..regions)
            .map(|r| [0.1 * r as f32, 0.1, 0.5, 0.9, rng.random::<f32>() * 0.1])
            .collect(),
        region_classes: vec![class; regions],
    }
}

#[test]
fn negatives_get_no_masked_loss_and_moc_targets_are_the_detector_labels() {
    let device = Default::default();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let samples: Vec<_> = (0..6).map(|i| sample(i, &mut rng)).collect();
    let model = ImageBert::<Compute>::init(&tiny_config(), &device);

    let all_negative = MaskingConfig {
        itm_negative_probability: 1.0,
        ..MaskingConfig::default()
    };
    let (input, targets) = build_pretrain_batch::<Compute>(
        &samples,
        FEATURE_DIM,
        SPECIAL,
        VOCAB,
        &all_negative,
        &mut rng,
        &device,
    );
    let itm: Vec<f32> = targets.itm_labels.clone().into_data().to_vec().unwrap();
    assert!(itm.iter().all(|&l| l == 0.0));
    let losses = pretrain_losses(
        model.forward(&input, &targets.chosen),
        targets,
        &LossWeights::default(),
    );
    assert_eq!(value(losses.mlm), 0.0);
    assert_eq!(value(losses.moc), 0.0);
    assert_eq!(value(losses.mrfr), 0.0);
    assert!(value(losses.itm) > 0.0);

    let every_region = MaskingConfig {
        itm_negative_probability: 0.0,
        region_probability: 1.0,
        ..MaskingConfig::default()
    };
    let (input, targets) = build_pretrain_batch::<Compute>(
        &samples,
        FEATURE_DIM,
        SPECIAL,
        VOCAB,
        &every_region,
        &mut rng,
        &device,
    );
    // Every real region is chosen, in order, and its MOC label is the detector's class.
    // Read as i64 whatever the backend's integer type (i64 on the CPU, i32 on GPUs).
    let ints = |t: Tensor<Compute, 1, Int>| -> Vec<i64> {
        t.into_data().convert::<i64>().to_vec().unwrap()
    };
    let labels = ints(targets.moc_labels.clone());
    let chosen = ints(targets.chosen.regions.clone());
    let regions = input.region_mask.dims()[1];
    let expected: Vec<(i64, i64)> = samples
        .iter()
        .enumerate()
        .flat_map(|(row, s)| {
            s.region_classes
                .iter()
                .enumerate()
                .map(move |(r, &c)| ((row * regions + r) as i64, i64::from(c)))
        })
        .collect();
    let got: Vec<(i64, i64)> = chosen.iter().copied().zip(labels).collect();
    assert_eq!(got, expected);
    // MRFR's target is each chosen region's original (unmasked) feature.
    let targets_flat: Vec<f32> = targets.mrfr_targets.clone().into_data().to_vec().unwrap();
    for (k, &slot) in chosen.iter().enumerate() {
        let (row, r) = (slot as usize / regions, slot as usize % regions);
        let original = &samples[row].region_features[r * FEATURE_DIM..(r + 1) * FEATURE_DIM];
        assert_eq!(
            &targets_flat[k * FEATURE_DIM..(k + 1) * FEATURE_DIM],
            original
        );
    }
    let losses = pretrain_losses(
        model.forward(&input, &targets.chosen),
        targets,
        &LossWeights::default(),
    );
    assert!(value(losses.mlm) > 0.0 && value(losses.moc) > 0.0 && value(losses.mrfr) > 0.0);
}

#[test]
fn fixed_shapes_pad_every_batch_alike_and_change_no_loss() {
    let device = Default::default();
    let model = ImageBert::<Compute>::init(&tiny_config(), &device);
    let fixed = FixedShapes {
        text_len: 12,
        regions: 7,
        chosen_multiple: 16,
    };
    let build = |samples: &[PretrainSample], seed: u64, fixed: Option<&FixedShapes>| {
        build_shaped_pretrain_batch::<Compute>(
            samples,
            FEATURE_DIM,
            SPECIAL,
            VOCAB,
            &MaskingConfig::default(),
            fixed,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &device,
        )
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let first: Vec<_> = (0..6).map(|i| sample(i, &mut rng)).collect();
    let second: Vec<_> = (3..9).map(|i| sample(i, &mut rng)).collect();
    let mut shapes = Vec::new();
    for (samples, seed) in [(&first, 1), (&second, 2)] {
        let (natural_input, natural) = build(samples, seed, None);
        let (padded_input, padded) = build(samples, seed, Some(&fixed));
        assert!(natural_input.text_ids.dims()[1] < 12 && natural_input.region_mask.dims()[1] < 7);
        shapes.push((
            padded_input.text_ids.dims(),
            padded_input.region_features.dims(),
            padded.chosen.text.dims(),
            padded.chosen.regions.dims(),
            padded.mrfr_targets.dims(),
        ));
        let losses = |input, targets: trainer::batch::PretrainTargets<Compute>| {
            let losses = pretrain_losses(
                model.forward(&input, &targets.chosen),
                targets,
                &LossWeights::default(),
            );
            [losses.mlm, losses.moc, losses.mrfr, losses.itm].map(value)
        };
        let (expected, got) = (losses(natural_input, natural), losses(padded_input, padded));
        assert!(expected.iter().all(|&l| l > 0.0), "{expected:?}");
        for (e, g) in expected.iter().zip(got) {
            assert!(
                (e - g).abs() <= 1e-5 * e.abs().max(1.0),
                "{expected:?} vs {got:?}"
            );
        }
    }
    // Both batches have the same shapes: text 12, regions 7, chosen lists of 16.
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(shapes[0].0, [6, 12]);
    assert_eq!(shapes[0].1, [6, 7, FEATURE_DIM]);
    assert_eq!((shapes[0].2, shapes[0].3), ([16], [16]));
    assert_eq!(shapes[0].4, [16, FEATURE_DIM]);
}

#[test]
fn all_four_losses_fall_when_training_a_small_model() {
    let device = Default::default();
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let samples: Vec<_> = (0..10).map(|i| sample(i, &mut rng)).collect();
    // Seeded initial weights: the outcome must not depend on the draw.
    <Train as burn::tensor::backend::Backend>::seed(&device, 2024);
    let mut model = ImageBert::<Train>::init(&tiny_config(), &device);
    let mut optimizer = AdamConfig::new().init();
    let config = MaskingConfig::default();
    let mut history: Vec<[f32; 4]> = Vec::new();
    for _ in 0..2000 {
        let (input, targets) = build_pretrain_batch::<Train>(
            &samples,
            FEATURE_DIM,
            SPECIAL,
            VOCAB,
            &config,
            &mut rng,
            &device,
        );
        let losses = pretrain_losses(
            model.forward(&input, &targets.chosen),
            targets,
            &LossWeights::default(),
        );
        let read = |t: &Tensor<Train, 1>| t.clone().into_data().to_vec::<f32>().unwrap()[0];
        history.push([
            read(&losses.mlm),
            read(&losses.moc),
            read(&losses.mrfr),
            read(&losses.itm),
        ]);
        let gradients = GradientsParams::from_grads(losses.total.backward(), &model);
        model = optimizer.step(1e-3, model, gradients);
    }
    let mean = |range: std::ops::Range<usize>, k: usize| {
        history[range.clone()].iter().map(|h| h[k]).sum::<f32>() / range.len() as f32
    };
    // The masked losses have a direct signal and fall far; ITM must discover the cross-modal
    // match through attention and falls later and less: over 1000 steps it reached 0.25-0.63
    // depending on the initial draw, over 2000 steps 0.25-0.31 (inits 1, 2, 3, 2024).
    for (k, (name, factor)) in [("mlm", 0.5), ("moc", 0.5), ("mrfr", 0.5), ("itm", 0.6)]
        .iter()
        .enumerate()
    {
        let (first, last) = (mean(0..10, k), mean(1990..2000, k));
        eprintln!("{name}: mean of the first 10 steps {first:.4}, of the last 10 {last:.4}");
        assert!(
            last < factor * first,
            "{name} did not fall: first 10 steps {first:.4}, last 10 steps {last:.4}"
        );
    }
}
