//! The Rust port against HuggingFace transformers on the real MiniLM-L6 weights: every hidden
//! state within 1e-4, and WordPiece ids equal to HuggingFace's tokenizer on the real Common Crawl
//! alt/title texts. Golden values: `tests/golden/` (see its README for how to regenerate).

use std::path::{Path, PathBuf};

use backend::Compute;
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::SafeTensors;
use trainer::model::bert::{AttentionKernel, TextEncoder};
use trainer::model::config::EncoderConfig;
use trainer::model::hf::HfCheckpoint;
use wordpiece::WordPiece;

/// A file of the real MiniLM asset; panics with the fix when the assets were not fetched.
fn minilm(file: &str) -> PathBuf {
    let dir = std::env::var_os("IMAGEBERT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"));
    let path = dir.join("minilm").join(file);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets",
        path.display()
    );
    path
}

fn golden(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file)
}

fn int_tensor(tensors: &SafeTensors, name: &str) -> Tensor<Compute, 2, Int> {
    let view = tensors.tensor(name).unwrap();
    let values: Vec<i64> = view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let shape: [usize; 2] = view.shape().try_into().unwrap();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn f32_values(tensors: &SafeTensors, name: &str) -> Vec<f32> {
    tensors
        .tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The largest absolute difference between two `[batch·seq, 384]` hidden states over the real
/// tokens (`mask` 1): HuggingFace computes padded positions too, and users see only real ones.
fn worst_real_token_difference(ours: &[f32], theirs: &[f32], mask: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    ours.chunks(384)
        .zip(theirs.chunks(384))
        .zip(mask)
        .filter(|(_, m)| **m == 1.0)
        .flat_map(|((a, b), _)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f32, f32::max)
}

#[test]
fn text_forward_matches_huggingface_hidden_states_within_1e_4() {
    let bytes = std::fs::read(golden("minilm_hidden.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let device = Default::default();
    let model = TextEncoder::<Compute>::init(&EncoderConfig::mini(), &device);
    let model = HfCheckpoint::open(&minilm("model.safetensors"))
        .unwrap()
        .load_text_encoder(model, &device)
        .unwrap();

    let ids = int_tensor(&reference, "input_ids");
    let segments = int_tensor(&reference, "token_type_ids");
    let mask = int_tensor(&reference, "attention_mask").float();
    let mask_values: Vec<f32> = mask.clone().into_data().to_vec().unwrap();
    assert!(
        mask_values.contains(&0.0),
        "the golden batch must contain padding"
    );

    // Without autodiff `Fused` runs Burn's attention operation (a boolean padding mask);
    // `Explicit` runs matmul + additive bias + softmax: both must match HuggingFace.
    for kernel in [AttentionKernel::Fused, AttentionKernel::Explicit] {
        let mut model = model.clone();
        model.encoder.attention_kernel = kernel;
        let states = model.hidden_states(ids.clone(), segments.clone(), mask.clone());
        assert_eq!(states.len(), 7);
        for (layer, state) in states.into_iter().enumerate() {
            let ours: Vec<f32> = state.into_data().to_vec().unwrap();
            let theirs = f32_values(&reference, &format!("hidden_{layer}"));
            assert_eq!(ours.len(), theirs.len());
            let worst = worst_real_token_difference(&ours, &theirs, &mask_values);
            assert!(
                worst < 1e-4,
                "{kernel:?} attention, hidden_{layer}: max abs difference {worst:e}"
            );
        }
    }
}

#[test]
fn wordpiece_ids_match_huggingface_on_real_alt_texts_and_hard_cases() {
    let vocab = WordPiece::from_file(&minilm("vocab.txt")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden("wordpiece_golden.json")).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(
        cases.len() > 100,
        "expected the real alt texts, got {} cases",
        cases.len()
    );
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = vocab.encode(text, usize::MAX);
        if ours != expected {
            mismatches.push(format!("{text:?}: ours {ours:?}, HF {expected:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn imagebert_initialised_from_minilm_keeps_the_text_encoder_and_masked_regions_do_not_leak() {
    use trainer::model::imagebert::{ImageBert, ImageBertConfig, ImageBertInput};

    let bytes = std::fs::read(golden("minilm_hidden.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let device = Default::default();
    let config = ImageBertConfig {
        encoder: EncoderConfig::mini(),
        region_feature_dim: 16,
        num_object_classes: 80,
    };
    let model = ImageBert::<Compute>::init(&config, &device);
    let (model, loaded) = HfCheckpoint::open(&minilm("model.safetensors"))
        .unwrap()
        .load_imagebert(model, &device)
        .unwrap();
    // all-MiniLM-L6-v2 ships a pooler but no MLM head.
    assert_eq!(loaded, ["embeddings", "encoder", "pooler"]);

    let ids = int_tensor(&reference, "input_ids");
    let [batch, text_len] = ids.dims();
    let mask = int_tensor(&reference, "attention_mask").float();
    let mask_values: Vec<f32> = mask.clone().into_data().to_vec().unwrap();
    let regions = 3;
    let input = ImageBertInput {
        text_ids: ids,
        text_mask: mask,
        region_features: Tensor::ones([batch, regions, 16], &device),
        region_boxes: Tensor::ones([batch, regions, 5], &device),
        region_mask: Tensor::zeros([batch, regions], &device),
    };
    for kernel in [AttentionKernel::Fused, AttentionKernel::Explicit] {
        let hidden = model.clone().with_attention_kernel(kernel).encode(&input);
        let text: Vec<f32> = hidden
            .slice([0..batch, 0..text_len, 0..384])
            .into_data()
            .to_vec()
            .unwrap();
        let theirs = f32_values(&reference, "hidden_6");
        let worst = worst_real_token_difference(&text, &theirs, &mask_values);
        assert!(
            worst < 1e-4,
            "{kernel:?} attention: max abs difference {worst:e}"
        );
    }
}
