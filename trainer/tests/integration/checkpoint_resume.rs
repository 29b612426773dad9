//! Exact resume at the level of one training process: a run checkpointed after step 3 and resumed
//! from disk into a freshly initialised model ends with bit-identical weights and losses; corrupt
//! and incomplete checkpoints are detected; only the newest checkpoints are kept.

use backend::Train;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use trainer::batch::{PretrainSample, build_pretrain_batch};
use trainer::checkpoint::{
    CheckpointStore, module_from_bytes, module_to_bytes, optimizer_from_bytes, optimizer_to_bytes,
    seed_step,
};
use trainer::losses::{LossWeights, pretrain_losses};
use trainer::model::config::EncoderConfig;
use trainer::model::imagebert::{ImageBert, ImageBertConfig};
use trainer::objectives::MaskingConfig;
use wordpiece::SpecialTokens;

const SPECIAL: SpecialTokens = SpecialTokens {
    pad: 0,
    unk: 1,
    cls: 2,
    sep: 3,
    mask: 4,
};
const SEED: u64 = 99;

fn config() -> ImageBertConfig {
    ImageBertConfig {
        encoder: EncoderConfig {
            vocab_size: 30,
            hidden_size: 16,
            num_layers: 2,
            num_heads: 2,
            intermediate_size: 32,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            // Dropout on, so the test also proves the per-step backend seeding.
            dropout: 0.1,
        },
        region_feature_dim: 4,
        num_object_classes: 3,
    }
}

fn samples() -> Vec<PretrainSample> {
    (0..6u32)
        .map(|i| PretrainSample {
            text_ids: vec![2, 5 + i, 6 + i, 7 + i, 3],
            region_features: (0..8).map(|v| (v as f32 + i as f32) / 10.0).collect(),
            region_boxes: vec![[0.1, 0.2, 0.3, 0.4, 0.02], [0.5, 0.5, 0.9, 0.9, 0.16]],
            region_classes: vec![i % 3, (i + 1) % 3],
        })
        .collect()
}

type Adam = burn::optim::adaptor::OptimizerAdaptor<burn::optim::Adam, ImageBert<Train>, Train>;

/// Runs steps `from..to`, returning the model, optimizer, RNG and each step's total loss.
fn train(
    mut model: ImageBert<Train>,
    mut optimizer: Adam,
    mut rng: ChaCha8Rng,
    steps: std::ops::Range<u64>,
) -> (ImageBert<Train>, Adam, ChaCha8Rng, Vec<f32>) {
    let device = Default::default();
    let data = samples();
    let mut losses = Vec::new();
    for step in steps {
        seed_step::<Train>(&device, SEED, step);
        let (input, targets) = build_pretrain_batch::<Train>(
            &data,
            4,
            SPECIAL,
            30,
            &MaskingConfig::default(),
            &mut rng,
            &device,
        );
        let loss = pretrain_losses(
            model.forward(&input, &targets.chosen),
            targets,
            &LossWeights::default(),
        )
        .total;
        losses.push(loss.clone().into_data().to_vec::<f32>().unwrap()[0]);
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-3, model, gradients);
    }
    (model, optimizer, rng, losses)
}

fn weights(model: ImageBert<Train>) -> Vec<u8> {
    module_to_bytes::<Train, _>(model).unwrap()
}

#[test]
fn resuming_from_a_checkpoint_reproduces_weights_and_losses_exactly() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().to_str().unwrap(), 3).unwrap();

    seed_step::<Train>(&device, SEED, u64::MAX);
    let model = ImageBert::<Train>::init(&config(), &device);
    let (model, optimizer, rng, first) = train(
        model,
        AdamConfig::new().init(),
        ChaCha8Rng::seed_from_u64(SEED),
        0..3,
    );
    let state = serde_json::to_vec(&rng).unwrap();
    store
        .save(
            3,
            &[
                (
                    "model.mpk",
                    &module_to_bytes::<Train, _>(model.clone()).unwrap(),
                ),
                ("optimizer.mpk", &optimizer_to_bytes(&optimizer).unwrap()),
                ("state.json", &state),
            ],
        )
        .unwrap();
    let (uninterrupted, _, _, rest) = train(model, optimizer, rng, 3..6);

    // A new process: different initial weights, state only from disk.
    let checkpoint = store.latest().unwrap().expect("a checkpoint");
    assert_eq!(checkpoint.step, 3);
    let fresh = ImageBert::<Train>::init(&config(), &device);
    let model =
        module_from_bytes::<Train, _>(fresh, checkpoint.file("model.mpk").unwrap(), &device)
            .unwrap();
    let optimizer = optimizer_from_bytes(
        AdamConfig::new().init(),
        checkpoint.file("optimizer.mpk").unwrap(),
        &device,
    )
    .unwrap();
    let rng: ChaCha8Rng = serde_json::from_slice(checkpoint.file("state.json").unwrap()).unwrap();
    let (resumed, _, _, resumed_losses) = train(model, optimizer, rng, 3..6);

    assert_eq!(first.len(), 3);
    assert_eq!(resumed_losses, rest, "losses after resume differ");
    assert_eq!(
        weights(resumed),
        weights(uninterrupted),
        "weights after resume differ"
    );
}

#[test]
fn a_corrupt_file_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().to_str().unwrap(), 3).unwrap();
    let files: [(&str, &[u8]); 2] = [("model.mpk", b"weights"), ("state.json", b"{}")];
    let uri = store.save(7, &files).unwrap();
    let model = std::path::Path::new(&uri).join("model.mpk");
    std::fs::write(&model, b"weightz").unwrap();
    let err = store.latest().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "corrupt checkpoint: {} has SHA-256",
            model.display()
        )),
        "{err}"
    );

    std::fs::remove_file(&model).unwrap();
    let err = store.load(7).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("corrupt checkpoint: {} is missing", model.display())
    );
}

#[test]
fn incomplete_checkpoints_are_ignored_and_only_the_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().to_str().unwrap(), 2).unwrap();
    for step in 1..=4 {
        store
            .save(step, &[("state.json", format!("{step}").as_bytes())])
            .unwrap();
    }
    assert_eq!(store.steps().unwrap(), [3, 4]);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, ["step-0000000003", "step-0000000004"]);
    // A crash after writing files but before the manifest leaves a folder without one.
    let crashed = std::path::PathBuf::from(store.uri_of(5));
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(crashed.join("state.json"), b"5").unwrap();
    let latest = store.latest().unwrap().unwrap();
    assert_eq!(latest.step, 4);
    assert_eq!(latest.file("state.json").unwrap(), b"4");
}
