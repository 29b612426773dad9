//! The BERT encoder (post-LayerNorm, GELU) and BERT's text embeddings, laid out like
//! HuggingFace's `BertModel` so its checkpoints load one tensor per parameter ([`super::hf`]).

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor};

use super::config::EncoderConfig;

/// Additive attention bias for keys that must not be attended (padding), as in BERT.
const MASKED_BIAS: f32 = -10_000.0;

/// `layer` applied to every token of `x` `[batch, seq, in]` as one `[batch·seq, in]` matrix
/// product. Burn's `Linear` on a 3-d input runs one product per sample against a broadcast
/// weight and sums `batch` weight gradients in the backward pass; one large product is the
/// same arithmetic in fewer, better-shaped GEMMs (the CPU step ran faster, see `trainer bench`).
pub fn linear_tokens<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, seq, input] = x.dims();
    let out = layer.forward(x.reshape([batch * seq, input]));
    let [_, output] = out.dims();
    out.reshape([batch, seq, output])
}

/// Word + position + segment embeddings, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct TextEmbeddings<B: Backend> {
    /// WordPiece embedding table `[vocab, hidden]`; the MLM head shares it.
    pub word: Embedding<B>,
    /// Position table `[max_positions, hidden]`.
    pub position: Embedding<B>,
    /// Segment table `[type_vocab, hidden]`: 0 text, 1 image.
    pub segment: Embedding<B>,
    /// LayerNorm over the summed embeddings.
    pub norm: LayerNorm<B>,
    /// Dropout after the LayerNorm.
    pub dropout: Dropout,
}

impl<B: Backend> TextEmbeddings<B> {
    /// Randomly initialised embeddings of the given shape.
    pub fn init(config: &EncoderConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        Self {
            word: EmbeddingConfig::new(config.vocab_size, h).init(device),
            position: EmbeddingConfig::new(config.max_position_embeddings, h).init(device),
            segment: EmbeddingConfig::new(config.type_vocab_size, h).init(device),
            norm: LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// Sum of the three embeddings, `[batch, seq, hidden]`, before LayerNorm (the image side
    /// adds its own terms before [`TextEmbeddings::finish`]).
    pub fn sum(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        segments: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        self.word.forward(ids) + self.position.forward(positions) + self.segment.forward(segments)
    }

    /// LayerNorm and dropout over summed embeddings.
    pub fn finish(&self, summed: Tensor<B, 3>) -> Tensor<B, 3> {
        self.dropout.forward(self.norm.forward(summed))
    }
}

/// How the encoder computes softmax(QKᵀ/√d)·V.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKernel {
    /// `fused` where the build's backend has a fused kernel (CUDA, wgpu), `explicit` otherwise.
    #[default]
    Auto,
    /// Burn's attention operation whenever no gradient is taken (scoring, evaluation): on GPU
    /// builds an autotuned flash-attention kernel (no `[seq × seq]` score matrix in memory). Under
    /// autodiff, where Burn 0.21 has no fused backward and attention-probability dropout is
    /// needed, the explicit operations.
    Fused,
    /// Always the explicit operations: a batched matmul, the padding bias, softmax, dropout and
    /// a second matmul.
    Explicit,
}

impl AttentionKernel {
    /// Whether attention over tensors on `device` runs Burn's attention operation.
    fn runs_fused<B: Backend>(self, device: &B::Device) -> bool {
        let fused = match self {
            Self::Auto => backend::FUSED_ATTENTION,
            Self::Fused => true,
            Self::Explicit => false,
        };
        fused && !B::ad_enabled(device)
    }
}

/// The padding mask in the form the chosen attention path takes, built once per forward pass.
#[derive(Debug, Clone)]
enum KeyMask<B: Backend> {
    /// `[batch, 1, 1, seq]` additive bias (0 or [`MASKED_BIAS`]), for the explicit operations.
    Bias(Tensor<B, 4>),
    /// `[batch, heads, seq, seq]`, `true` at padding keys, for Burn's attention operation;
    /// materialised, as flash kernels read it by strides and a broadcast view has zero strides.
    Padding(Tensor<B, 4, Bool>),
}

impl<B: Backend> KeyMask<B> {
    /// From a `[batch, seq]` 1/0 mask (1 for real tokens), for `heads` heads and `kernel`.
    fn new(mask: Tensor<B, 2>, heads: usize, kernel: AttentionKernel) -> Self {
        let [batch, seq] = mask.dims();
        if kernel.runs_fused::<B>(&mask.device()) {
            Self::Padding(
                mask.lower_elem(0.5)
                    .reshape([batch, 1, 1, seq])
                    .repeat_dim(1, heads)
                    .repeat_dim(2, seq),
            )
        } else {
            Self::Bias(((mask.neg() + 1.0) * MASKED_BIAS).reshape([batch, 1, 1, seq]))
        }
    }
}

/// Multi-head self-attention with its output projection, residual and LayerNorm.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Output projection.
    pub output: Linear<B>,
    /// LayerNorm after the residual.
    pub norm: LayerNorm<B>,
    /// Dropout on attention probabilities and on the output.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    fn init(config: &EncoderConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let linear = || LinearConfig::new(h, h).init(device);
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            norm: LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            num_heads: config.num_heads,
        }
    }

    /// `x`: `[batch, seq, hidden]`; `mask`: which keys are padding.
    fn forward(&self, x: Tensor<B, 3>, mask: &KeyMask<B>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let head = hidden / self.num_heads;
        let split = |t: Tensor<B, 3>| {
            t.reshape([batch, seq, self.num_heads, head])
                .swap_dims(1, 2)
        };
        let q = split(linear_tokens(&self.query, x.clone()));
        let k = split(linear_tokens(&self.key, x.clone()));
        let v = split(linear_tokens(&self.value, x.clone()));
        let context = match mask {
            // The default scale is 1/√head; without autodiff dropout is the identity.
            KeyMask::Padding(padding) => attention(
                q,
                k,
                v,
                Some(padding.clone()),
                None,
                AttentionModuleOptions::default(),
            ),
            KeyMask::Bias(bias) => {
                let scores = q.matmul(k.swap_dims(2, 3)) / (head as f64).sqrt() + bias.clone();
                self.dropout.forward(softmax(scores, 3)).matmul(v)
            }
        };
        let context = context.swap_dims(1, 2).reshape([batch, seq, hidden]);
        let out = self.dropout.forward(linear_tokens(&self.output, context));
        self.norm.forward(out + x)
    }
}

/// One transformer layer: self-attention, then the GELU feed-forward with residual + LayerNorm.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// The attention block.
    pub attention: SelfAttention<B>,
    /// Feed-forward expansion (`hidden -> intermediate`).
    pub intermediate: Linear<B>,
    /// Feed-forward projection (`intermediate -> hidden`).
    pub output: Linear<B>,
    /// LayerNorm after the feed-forward residual.
    pub norm: LayerNorm<B>,
    /// Dropout on the feed-forward output.
    pub dropout: Dropout,
}

impl<B: Backend> EncoderLayer<B> {
    fn init(config: &EncoderConfig, device: &B::Device) -> Self {
        Self {
            attention: SelfAttention::init(config, device),
            intermediate: LinearConfig::new(config.hidden_size, config.intermediate_size)
                .init(device),
            output: LinearConfig::new(config.intermediate_size, config.hidden_size).init(device),
            norm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, mask: &KeyMask<B>) -> Tensor<B, 3> {
        let x = self.attention.forward(x, mask);
        let ff = linear_tokens(
            &self.output,
            gelu(linear_tokens(&self.intermediate, x.clone())),
        );
        self.norm.forward(self.dropout.forward(ff) + x)
    }
}

/// The stack of transformer layers.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Layers, bottom first.
    pub layers: Vec<EncoderLayer<B>>,
    /// How attention is computed (not saved: a run-time choice).
    #[module(skip)]
    pub attention_kernel: AttentionKernel,
}

impl<B: Backend> Encoder<B> {
    /// Randomly initialised encoder of the given shape.
    pub fn init(config: &EncoderConfig, device: &B::Device) -> Self {
        Self {
            layers: (0..config.num_layers)
                .map(|_| EncoderLayer::init(config, device))
                .collect(),
            attention_kernel: AttentionKernel::default(),
        }
    }

    /// Runs every layer; `mask` is `[batch, seq]`, 1 for real tokens and 0 for padding.
    /// Returns the input followed by each layer's output (HuggingFace's `hidden_states`).
    pub fn forward_all(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>) -> Vec<Tensor<B, 3>> {
        let mask = self.key_mask(mask);
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let mut x = x;
        for layer in &self.layers {
            states.push(x.clone());
            x = layer.forward(x, &mask);
        }
        states.push(x);
        states
    }

    /// Runs every layer and returns the last output.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 3> {
        let mask = self.key_mask(mask);
        self.layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, &mask))
    }

    /// The padding mask every layer's attention takes.
    fn key_mask(&self, mask: Tensor<B, 2>) -> KeyMask<B> {
        let heads = self.layers.first().map_or(1, |l| l.attention.num_heads);
        KeyMask::new(mask, heads, self.attention_kernel)
    }
}

/// BERT as a text encoder: embeddings + encoder (HuggingFace `BertModel` without the pooler).
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    /// Text embeddings.
    pub embeddings: TextEmbeddings<B>,
    /// Transformer layers.
    pub encoder: Encoder<B>,
}

impl<B: Backend> TextEncoder<B> {
    /// Randomly initialised model of the given shape.
    pub fn init(config: &EncoderConfig, device: &B::Device) -> Self {
        Self {
            embeddings: TextEmbeddings::init(config, device),
            encoder: Encoder::init(config, device),
        }
    }

    /// Text-only forward: `ids`, `segments` and `mask` are `[batch, seq]`; positions are
    /// 0, 1, 2, ... Returns the embedding output and every layer's output.
    pub fn hidden_states(
        &self,
        ids: Tensor<B, 2, Int>,
        segments: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
    ) -> Vec<Tensor<B, 3>> {
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .repeat_dim(0, batch);
        let x = self
            .embeddings
            .finish(self.embeddings.sum(ids, positions, segments));
        self.encoder.forward_all(x, mask)
    }
}
