//! The HuggingFace loader on small checkpoints made here in the same layout as BERT's
//! `model.safetensors`: every parameter lands where it should (Linear weights transposed), and a
//! wrong shape or a missing key is refused naming the file and the key.

use std::collections::BTreeMap;

use backend::Compute;
use burn::tensor::Tensor;
use safetensors::{Dtype, tensor::TensorView};
use trainer::model::bert::TextEncoder;
use trainer::model::config::EncoderConfig;
use trainer::model::hf::HfCheckpoint;

fn tiny() -> EncoderConfig {
    EncoderConfig {
        vocab_size: 11,
        hidden_size: 8,
        num_layers: 2,
        num_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        dropout: 0.1,
    }
}

/// Every tensor of a HuggingFace `BertModel` of shape `c`, filled with distinct values.
fn hf_tensors(
    c: &EncoderConfig,
    prefix: &str,
    old_norm_names: bool,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
    ];
    let norm = |key: &str, shapes: &mut Vec<(String, Vec<usize>)>| {
        let (w, b) = if old_norm_names {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        shapes.push((format!("{key}.{w}"), vec![h]));
        shapes.push((format!("{key}.{b}"), vec![h]));
    };
    norm("embeddings.LayerNorm", &mut shapes);
    for i in 0..c.num_layers {
        let l = format!("encoder.layer.{i}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", f, h),
            ("output.dense", h, f),
        ] {
            shapes.push((format!("{l}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{l}.{name}.bias"), vec![out]));
        }
        norm(&format!("{l}.attention.output.LayerNorm"), &mut shapes);
        norm(&format!("{l}.output.LayerNorm"), &mut shapes);
    }
    let mut next = 0.0f32;
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|_| {
                    next += 0.001;
                    next
                })
                .collect();
            (format!("{prefix}{name}"), (shape, values))
        })
        .collect()
}

fn write(
    dir: &std::path::Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> std::path::PathBuf {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (shape, _))| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, shape.clone(), &bytes[k]).unwrap(),
            )
        })
        .collect();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

fn values<const D: usize>(t: Tensor<Compute, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[test]
fn every_parameter_lands_in_place_with_linear_weights_transposed() {
    let dir = tempfile::tempdir().unwrap();
    for (prefix, old_names) in [("", false), ("bert.", true)] {
        let tensors = hf_tensors(&tiny(), prefix, old_names);
        let path = write(dir.path(), &tensors);
        let device = Default::default();
        let model = TextEncoder::<Compute>::init(&tiny(), &device);
        let model = HfCheckpoint::open(&path)
            .unwrap()
            .load_text_encoder(model, &device)
            .unwrap();

        let word = &tensors[&format!("{prefix}embeddings.word_embeddings.weight")].1;
        assert_eq!(&values(model.embeddings.word.weight.val()), word);
        let gamma = if old_names { "gamma" } else { "weight" };
        let norm = &tensors[&format!("{prefix}encoder.layer.1.output.LayerNorm.{gamma}")].1;
        assert_eq!(&values(model.encoder.layers[1].norm.gamma.val()), norm);

        // PyTorch stores intermediate.dense.weight as [out=12, in=8]; Burn wants [in, out].
        let (shape, torch) =
            &tensors[&format!("{prefix}encoder.layer.0.intermediate.dense.weight")];
        assert_eq!(shape, &vec![12, 8]);
        let burn_weight = model.encoder.layers[0].intermediate.weight.val();
        assert_eq!(burn_weight.dims(), [8, 12]);
        let burn_values = values(burn_weight);
        for out in 0..12 {
            for inp in 0..8 {
                assert_eq!(burn_values[inp * 12 + out], torch[out * 8 + inp]);
            }
        }
    }
}

#[test]
fn a_wrong_shape_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = hf_tensors(&tiny(), "", false);
    tensors.insert(
        "encoder.layer.1.attention.self.key.weight".into(),
        (vec![8, 4], vec![0.0; 32]),
    );
    let path = write(dir.path(), &tensors);
    let device = Default::default();
    let model = TextEncoder::<Compute>::init(&tiny(), &device);
    let err = HfCheckpoint::open(&path)
        .unwrap()
        .load_text_encoder(model, &device)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor `encoder.layer.1.attention.self.key.weight` has shape [8, 4], the model expects [8, 8]",
            path.display()
        )
    );
}

#[test]
fn a_missing_layer_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = hf_tensors(&tiny(), "", false);
    let path = write(dir.path(), &tensors);
    let mut deeper = tiny();
    deeper.num_layers = 3;
    let device = Default::default();
    let model = TextEncoder::<Compute>::init(&deeper, &device);
    let err = HfCheckpoint::open(&path)
        .unwrap()
        .load_text_encoder(model, &device)
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("tensor `encoder.layer.2.attention.self.query.weight` is missing"),
        "{err}"
    );
}

#[test]
fn a_file_without_bert_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = BTreeMap::new();
    tensors.insert("conv.weight".to_owned(), (vec![2], vec![1.0, 2.0]));
    let path = write(dir.path(), &tensors);
    let err = HfCheckpoint::open(&path).err().unwrap();
    assert!(
        err.to_string()
            .ends_with("no BERT embeddings (`embeddings.*` or `bert.embeddings.*` keys)"),
        "{err}"
    );
}
