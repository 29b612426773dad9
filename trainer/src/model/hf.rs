//! Loading HuggingFace BERT checkpoints (`model.safetensors`) into the encoder: key remapping
//! (`bert.` prefix of pre-training checkpoints, old `gamma`/`beta` LayerNorm names), Linear
//! weights transposed from PyTorch's `[out, in]` to Burn's `[in, out]`, f16/bf16 widened to f32,
//! and every shape checked, with errors naming the file and the key.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::bert::{
    AttentionKernel, Encoder, EncoderLayer, SelfAttention, TextEmbeddings, TextEncoder,
};
use super::imagebert::{HeadTransform, ImageBert};

/// A HuggingFace safetensors checkpoint held in memory.
pub struct HfCheckpoint {
    file: String,
    bytes: Vec<u8>,
    prefix: &'static str,
}

impl HfCheckpoint {
    /// Reads `path` and detects the key prefix (`bert.` for `BertForPreTraining` files).
    pub fn open(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("reading {file}"))?;
        let names: Vec<String> = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{file}: not a safetensors file"))?
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let prefix = if names.iter().any(|n| n.starts_with("bert.embeddings.")) {
            "bert."
        } else if names.iter().any(|n| n.starts_with("embeddings.")) {
            ""
        } else {
            bail!("{file}: no BERT embeddings (`embeddings.*` or `bert.embeddings.*` keys)");
        };
        Ok(Self {
            file,
            bytes,
            prefix,
        })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    /// The stored name of `key`: pre-training heads (`cls.*`) sit beside the `bert.` prefix.
    fn full_key(&self, key: &str) -> String {
        if key.starts_with("cls.") {
            key.to_owned()
        } else {
            format!("{}{key}", self.prefix)
        }
    }

    /// Whether the checkpoint holds `key` (after the prefix).
    pub fn contains(&self, key: &str) -> bool {
        self.tensors()
            .tensor(&format!("{}{key}", self.prefix))
            .is_ok()
    }

    /// The tensor stored under `key` (after the prefix), checked to have `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let full = self.full_key(key);
        let tensors = self.tensors();
        let view = tensors
            .tensor(&full)
            .with_context(|| format!("{}: tensor `{full}` is missing", self.file))?;
        if view.shape() != shape {
            bail!(
                "{}: tensor `{full}` has shape {:?}, the model expects {shape:?}",
                self.file,
                view.shape()
            );
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => bail!(
                "{}: tensor `{full}` has dtype {other:?}, expected a float",
                self.file
            ),
        };
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// A PyTorch `nn.Linear` (`weight [out, in]`, `bias [out]`) as a Burn [`Linear`].
    fn linear<B: Backend>(
        &self,
        key: &str,
        linear: Linear<B>,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let [d_in, d_out] = linear.weight.dims();
        let weight = self
            .tensor::<B, 2>(&format!("{key}.weight"), [d_out, d_in], device)?
            .transpose();
        let bias = self.tensor::<B, 1>(&format!("{key}.bias"), [d_out], device)?;
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(bias)),
        })
    }

    /// A LayerNorm stored as `weight`/`bias` or, in old TensorFlow conversions, `gamma`/`beta`.
    fn layer_norm<B: Backend>(
        &self,
        key: &str,
        mut norm: LayerNorm<B>,
        device: &B::Device,
    ) -> Result<LayerNorm<B>> {
        let [d] = norm.gamma.dims();
        let (scale, shift) = if self.contains(&format!("{key}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        norm.gamma = Param::from_tensor(self.tensor(&format!("{key}.{scale}"), [d], device)?);
        norm.beta = Some(Param::from_tensor(self.tensor(
            &format!("{key}.{shift}"),
            [d],
            device,
        )?));
        Ok(norm)
    }

    fn embedding<B: Backend>(
        &self,
        key: &str,
        embedding: Embedding<B>,
        device: &B::Device,
    ) -> Result<Embedding<B>> {
        let shape = embedding.weight.dims();
        Ok(Embedding {
            weight: Param::from_tensor(self.tensor(&format!("{key}.weight"), shape, device)?),
        })
    }

    /// Replaces every parameter of `model` with the checkpoint's; the shapes must agree.
    pub fn load_text_encoder<B: Backend>(
        &self,
        model: TextEncoder<B>,
        device: &B::Device,
    ) -> Result<TextEncoder<B>> {
        Ok(TextEncoder {
            embeddings: self.embeddings(model.embeddings, device)?,
            encoder: self.encoder(model.encoder, device)?,
        })
    }

    /// Initialises ImageBERT's text side from the checkpoint (ImageBERT starts from BERT-base,
    /// §4.1): embeddings and encoder always; the pooler and the MLM head (`cls.predictions.*`)
    /// when the file has them. Returns the model and the names of the parts loaded.
    pub fn load_imagebert<B: Backend>(
        &self,
        model: ImageBert<B>,
        device: &B::Device,
    ) -> Result<(ImageBert<B>, Vec<&'static str>)> {
        let mut model = model;
        let mut loaded = vec!["embeddings", "encoder"];
        model.text = self.embeddings(model.text, device)?;
        model.encoder = self.encoder(model.encoder, device)?;
        if self.contains("pooler.dense.weight") {
            model.pooler = self.linear("pooler.dense", model.pooler, device)?;
            loaded.push("pooler");
        }
        if self.contains("cls.predictions.bias") {
            let head = "cls.predictions.transform";
            let t = model.mlm_transform;
            model.mlm_transform = HeadTransform {
                dense: self.linear(&format!("{head}.dense"), t.dense, device)?,
                norm: self.layer_norm(&format!("{head}.LayerNorm"), t.norm, device)?,
            };
            let [vocab] = model.mlm_bias.dims();
            model.mlm_bias =
                Param::from_tensor(self.tensor("cls.predictions.bias", [vocab], device)?);
            loaded.push("mlm_head");
        }
        Ok((model, loaded))
    }

    fn embeddings<B: Backend>(
        &self,
        e: TextEmbeddings<B>,
        device: &B::Device,
    ) -> Result<TextEmbeddings<B>> {
        Ok(TextEmbeddings {
            word: self.embedding("embeddings.word_embeddings", e.word, device)?,
            position: self.embedding("embeddings.position_embeddings", e.position, device)?,
            segment: self.embedding("embeddings.token_type_embeddings", e.segment, device)?,
            norm: self.layer_norm("embeddings.LayerNorm", e.norm, device)?,
            dropout: e.dropout,
        })
    }

    fn encoder<B: Backend>(&self, encoder: Encoder<B>, device: &B::Device) -> Result<Encoder<B>> {
        Ok(Encoder {
            layers: encoder
                .layers
                .into_iter()
                .enumerate()
                .map(|(i, layer)| self.layer(i, layer, device))
                .collect::<Result<_>>()?,
            attention_kernel: AttentionKernel::default(),
        })
    }

    fn layer<B: Backend>(
        &self,
        i: usize,
        layer: EncoderLayer<B>,
        device: &B::Device,
    ) -> Result<EncoderLayer<B>> {
        let key = format!("encoder.layer.{i}");
        let a = layer.attention;
        let attention = SelfAttention {
            query: self.linear(&format!("{key}.attention.self.query"), a.query, device)?,
            key: self.linear(&format!("{key}.attention.self.key"), a.key, device)?,
            value: self.linear(&format!("{key}.attention.self.value"), a.value, device)?,
            output: self.linear(&format!("{key}.attention.output.dense"), a.output, device)?,
            norm: self.layer_norm(&format!("{key}.attention.output.LayerNorm"), a.norm, device)?,
            dropout: a.dropout,
            num_heads: a.num_heads,
        };
        Ok(EncoderLayer {
            attention,
            intermediate: self.linear(
                &format!("{key}.intermediate.dense"),
                layer.intermediate,
                device,
            )?,
            output: self.linear(&format!("{key}.output.dense"), layer.output, device)?,
            norm: self.layer_norm(&format!("{key}.output.LayerNorm"), layer.norm, device)?,
            dropout: layer.dropout,
        })
    }
}
