//! `trainer run` as a user runs it: a run killed with SIGKILL mid-way and started again ends with
//! the same final weights and the same loss log as a run that was never interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend::Compute;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use half::f16;
use schemas::pair_shard::{self, PairRecord, Status};
use schemas::region_features::{self, DetectorInfo, RegionRecord, RegionStatus};
use trainer::checkpoint::module_from_bytes;
use trainer::model::config::EncoderConfig;
use trainer::model::imagebert::{ImageBert, ImageBertConfig};

const STEPS: usize = 200;
const WORDS: [&str; 12] = [
    "a", "red", "bus", "dog", "on", "the", "grass", "man", "riding", "horse", "near", "river",
];

fn vocab() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/minilm/vocab.txt");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets",
        path.display()
    );
    path.canonicalize().unwrap()
}

/// Two shards of eight kept pairs, each with three regions whose class and feature follow the
/// caption's first word.
fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let detector = DetectorInfo {
        name: "test".into(),
        version: "1".into(),
        feature_dim: 8,
        num_classes: 5,
        num_attributes: None,
    };
    for shard in 0..2usize {
        let mut pairs = Vec::new();
        let mut regions = Vec::new();
        for row in 0..8usize {
            let i = shard * 8 + row;
            let key = format!("{shard:05}{row:04}");
            let caption: Vec<&str> = (0..4).map(|w| WORDS[(i + w * 5) % WORDS.len()]).collect();
            pairs.push(PairRecord {
                text: Some(caption.join(" ")),
                ..PairRecord::new(
                    key.clone(),
                    format!("http://127.0.0.1/{i}.jpg"),
                    Status::Kept,
                    "urls.txt",
                )
            });
            let class = (i % 5) as u32;
            regions.push(RegionRecord {
                key,
                status: RegionStatus::Ok,
                error_message: None,
                image_size: Some((100, 100)),
                boxes: (0..3)
                    .map(|b| [b as f32 * 10.0, 0.0, 50.0 + b as f32, 60.0])
                    .collect(),
                class_ids: vec![class; 3],
                class_scores: vec![0.9, 0.8, 0.7],
                attribute_ids: None,
                attribute_scores: None,
                features: (0..24)
                    .map(|v| f16::from_f32(if v % 8 == class as usize { 1.0 } else { 0.0 }))
                    .collect(),
            });
        }
        let file = std::fs::File::create(dir.join(format!("{shard:05}.parquet"))).unwrap();
        pair_shard::write("pairs", file, &pairs).unwrap();
        let file = std::fs::File::create(dir.join(format!("{shard:05}.regions.parquet"))).unwrap();
        region_features::write("regions", file, &detector, &regions).unwrap();
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let config = format!(
        r#"[model]
vocab = "{vocab}"

[model.encoder]
vocab_size = 30522
hidden_size = 32
num_layers = 2
num_heads = 4
intermediate_size = 64
max_position_embeddings = 64
type_vocab_size = 2
layer_norm_eps = 1e-12
dropout = 0.1

[data]
dataset = "data"
max_text_len = 16
max_regions = 4
seed = 7

[train]
output = "run"
steps = {STEPS}
batch_size = 4
max_tokens = 80
learning_rate = 1e-3
warmup_steps = 10
checkpoint_every = 20
keep_checkpoints = 2
"#,
        vocab = vocab().display()
    );
    let path = dir.join("stage1.toml");
    std::fs::write(&path, config).unwrap();
    write_dataset(&dir.join("data"));
    path
}

fn trainer(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trainer"));
    command.args(["run", "--config"]).arg(config);
    command
}

/// The log without the timing column, which differs between runs.
fn losses(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("run/log.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            value.as_object_mut().unwrap().remove("samples_per_s");
            value
        })
        .collect()
}

/// Every parameter value of the final checkpoint's model, in module order. (The file's bytes
/// also hold parameter ids, which Burn draws at random, so the files themselves differ.)
fn final_weights(dir: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor<Compute> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Compute, D>>) {
            self.0
                .extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let config = ImageBertConfig {
        encoder: EncoderConfig {
            vocab_size: 30522,
            hidden_size: 32,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            dropout: 0.1,
        },
        region_feature_dim: 8,
        num_object_classes: 5,
    };
    let device = Default::default();
    let bytes =
        std::fs::read(dir.join(format!("run/checkpoints/step-{STEPS:010}/model.mpk"))).unwrap();
    let model = module_from_bytes::<Compute, _>(ImageBert::init(&config, &device), &bytes, &device)
        .unwrap();
    let mut values = Collect(Vec::new());
    model.visit(&mut values);
    values.0
}

#[test]
fn a_run_killed_mid_way_resumes_to_the_same_weights_and_loss_log() {
    let whole = tempfile::tempdir().unwrap();
    let config = write_config(whole.path());
    let out = trainer(&config).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = tempfile::tempdir().unwrap();
    let config = write_config(killed.path());
    let mut child = trainer(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = killed.path().join("run/log.jsonl");
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 50 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress in the log"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let lines_at_kill = losses(killed.path()).len();
    assert!(lines_at_kill < STEPS, "the run finished before the kill");

    let out = trainer(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("resumed from step 0)"),
        "the second run did not resume: {stdout}"
    );

    let (expected, got) = (losses(whole.path()), losses(killed.path()));
    assert_eq!(got.len(), STEPS);
    assert_eq!(got, expected, "loss logs differ");
    assert!(
        final_weights(killed.path()) == final_weights(whole.path()),
        "final weights differ"
    );
}
