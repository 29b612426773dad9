//! What the `trainer run` tests share: a small dataset in the pipeline's and detector's shard
//! formats, a tiny model's config, and reading a checkpoint's weights back.

use std::path::{Path, PathBuf};
use std::process::Command;

use backend::Compute;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use half::f16;
use schemas::pair_shard::{self, PairRecord, Status};
use schemas::region_features::{self, DetectorInfo, RegionRecord, RegionStatus};
use trainer::checkpoint::module_from_bytes;
use trainer::model::config::EncoderConfig;
use trainer::model::imagebert::{ImageBert, ImageBertConfig};

const WORDS: [&str; 12] = [
    "a", "red", "bus", "dog", "on", "the", "grass", "man", "riding", "horse", "near", "river",
];

/// MiniLM's vocabulary from the assets.
pub fn vocab() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/minilm/vocab.txt");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets",
        path.display()
    );
    path.canonicalize().unwrap()
}

/// `shards` shards of eight kept pairs, each with three regions whose class and feature follow
/// the caption's first word.
pub fn write_dataset(dir: &Path, shards: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let detector = DetectorInfo {
        name: "test".into(),
        version: "1".into(),
        feature_dim: 8,
        num_classes: 5,
        num_attributes: None,
    };
    for shard in 0..shards {
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

/// The tiny model every test config uses.
pub fn tiny_model() -> ImageBertConfig {
    ImageBertConfig {
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
    }
}

/// A stage config of [`tiny_model`] over `data/` writing to `run/`, both beside the config;
/// `train` holds the `[train]` keys besides `output`.
pub fn config_text(train: &str) -> String {
    let model = tiny_model().encoder;
    format!(
        r#"[model]
vocab = "{vocab}"

[model.encoder]
vocab_size = {vocab_size}
hidden_size = {hidden}
num_layers = {layers}
num_heads = {heads}
intermediate_size = {intermediate}
max_position_embeddings = {positions}
type_vocab_size = 2
layer_norm_eps = 1e-12
dropout = {dropout}

[data]
dataset = "data"
max_text_len = 16
max_regions = 4
seed = 7

[train]
output = "run"
{train}
"#,
        vocab = vocab().display(),
        vocab_size = model.vocab_size,
        hidden = model.hidden_size,
        layers = model.num_layers,
        heads = model.num_heads,
        intermediate = model.intermediate_size,
        positions = model.max_position_embeddings,
        dropout = model.dropout,
    )
}

/// `trainer run --config <config>`.
pub fn trainer(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trainer"));
    command.args(["run", "--config"]).arg(config);
    command
}

/// `run/log.jsonl` beside the config, without the timing column, which differs between runs.
pub fn losses(dir: &Path) -> Vec<serde_json::Value> {
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

/// Every parameter value of the [`tiny_model`] checkpoint of `step` under `dir/run`, in module
/// order. (The file's bytes also hold parameter ids, which Burn draws at random, so the files
/// themselves differ.)
pub fn weights(dir: &Path, step: u64) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor<Compute> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Compute, D>>) {
            self.0
                .extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let device = Default::default();
    let bytes =
        std::fs::read(dir.join(format!("run/checkpoints/step-{step:010}/model.mpk"))).unwrap();
    let model =
        module_from_bytes::<Compute, _>(ImageBert::init(&tiny_model(), &device), &bytes, &device)
            .unwrap();
    let mut values = Collect(Vec::new());
    model.visit(&mut values);
    values.0
}
