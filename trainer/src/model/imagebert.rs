//! ImageBERT: one stream of `[CLS] text [SEP]` tokens followed by up to 100 region tokens through
//! one BERT encoder, with the four pre-training heads (ImageBERT §3; `../shared/docs/imagebert.md`).
//!
//! Image embedding (§3.2): `e = LayerNorm(FC(roi_feature) + FC(c) + segment + position)` where `c`
//! is the 5-d box and every region shares ONE position, since regions are unordered. The paper
//! gives neither which position nor whether the LayerNorm is shared with text: we use position 0
//! (the best-trained row of a pre-trained table) and a separate image LayerNorm, as UNITER does.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::bert::{AttentionKernel, Encoder, TextEmbeddings, linear_tokens};
use super::config::EncoderConfig;

/// Segment id of text tokens.
pub const TEXT_SEGMENT: i64 = 0;
/// Segment id of region tokens.
pub const IMAGE_SEGMENT: i64 = 1;
/// The one position every region token shares.
pub const IMAGE_POSITION: i64 = 0;

/// The whole model's shape: the encoder plus what the detector's output fixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageBertConfig {
    /// Encoder and text-embedding shape.
    pub encoder: EncoderConfig,
    /// Length of one region feature (the detector's `imagebert.feature_dim`).
    pub region_feature_dim: usize,
    /// Number of detector object classes: the MOC head's size (`imagebert.detector.num_classes`).
    pub num_object_classes: usize,
}

/// A dense + GELU + LayerNorm transform, as in BERT's MLM head and UNITER's region heads.
#[derive(Module, Debug)]
pub struct HeadTransform<B: Backend> {
    /// Dense layer.
    pub dense: Linear<B>,
    /// LayerNorm after GELU.
    pub norm: LayerNorm<B>,
}

impl<B: Backend> HeadTransform<B> {
    fn init(config: &EncoderConfig, device: &B::Device) -> Self {
        Self {
            dense: LinearConfig::new(config.hidden_size, config.hidden_size).init(device),
            norm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
        }
    }

    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.norm.forward(gelu(self.dense.forward(x)))
    }
}

/// Region-token embeddings.
#[derive(Module, Debug)]
pub struct ImageEmbeddings<B: Backend> {
    /// FC from the region feature to the hidden size.
    pub feature: Linear<B>,
    /// FC from the 5-d box to the hidden size.
    pub location: Linear<B>,
    /// LayerNorm over the sum.
    pub norm: LayerNorm<B>,
}

/// The ImageBERT model with its four pre-training heads.
#[derive(Module, Debug)]
pub struct ImageBert<B: Backend> {
    /// Text embeddings; their segment and position tables serve region tokens too.
    pub text: TextEmbeddings<B>,
    /// Region embeddings.
    pub image: ImageEmbeddings<B>,
    /// The shared transformer.
    pub encoder: Encoder<B>,
    /// MLM transform; its decoder is the word-embedding table (tied).
    pub mlm_transform: HeadTransform<B>,
    /// MLM output bias, one per vocabulary entry.
    pub mlm_bias: Param<Tensor<B, 1>>,
    /// MOC: transform + classifier over the detector's classes.
    pub moc_transform: HeadTransform<B>,
    /// MOC classifier.
    pub moc_classifier: Linear<B>,
    /// MRFR: transform + regression back to the region-feature size.
    pub mrfr_transform: HeadTransform<B>,
    /// MRFR regressor.
    pub mrfr_regressor: Linear<B>,
    /// BERT pooler over `[CLS]` (dense + tanh), loaded from the checkpoint when present.
    pub pooler: Linear<B>,
    /// ITM: one matching score from the pooled `[CLS]`.
    pub itm: Linear<B>,
}

/// One batch of model inputs, already masked.
#[derive(Debug, Clone)]
pub struct ImageBertInput<B: Backend> {
    /// `[CLS] text [SEP]` ids, padded: `[batch, text_len]`.
    pub text_ids: Tensor<B, 2, Int>,
    /// 1 for real text tokens, 0 for padding: `[batch, text_len]`.
    pub text_mask: Tensor<B, 2>,
    /// Region features (masked ones zeroed): `[batch, regions, feature_dim]`.
    pub region_features: Tensor<B, 3>,
    /// 5-d boxes: `[batch, regions, 5]`.
    pub region_boxes: Tensor<B, 3>,
    /// 1 for real regions, 0 for padding: `[batch, regions]`.
    pub region_mask: Tensor<B, 2>,
}

/// The tokens the masked heads (MLM, MOC, MRFR) predict: only those carry a loss, so only those
/// are projected, as UNITER does (at every text position, the vocabulary projection was about a
/// fifth of `mini`'s multiply-adds, counted from the shapes; `trainer bench` ran 2x faster with
/// this and one GEMM per linear layer).
#[derive(Debug, Clone)]
pub struct ChosenPositions<B: Backend> {
    /// Text rows to predict, as indices into the text tokens flattened to
    /// `[batch × text_len]` (row `b`, token `t` is `b × text_len + t`): `[chosen_tokens]`.
    pub text: Tensor<B, 1, Int>,
    /// Regions to predict, as indices into the regions flattened to `[batch × regions]`:
    /// `[chosen_regions]`.
    pub regions: Tensor<B, 1, Int>,
}

/// Every head's prediction for one batch.
#[derive(Debug, Clone)]
pub struct ImageBertOutput<B: Backend> {
    /// MLM logits over the vocabulary at the chosen text tokens: `[chosen_tokens, vocab]`.
    pub mlm_logits: Tensor<B, 2>,
    /// MOC logits over detector classes at the chosen regions: `[chosen_regions, classes]`.
    pub moc_logits: Tensor<B, 2>,
    /// MRFR regressed features at the chosen regions: `[chosen_regions, feature_dim]`.
    pub mrfr_features: Tensor<B, 2>,
    /// ITM matching logit (sigmoid gives the probability of a match): `[batch]`.
    pub itm_logits: Tensor<B, 1>,
}

impl<B: Backend> ImageBert<B> {
    /// Randomly initialised model.
    pub fn init(config: &ImageBertConfig, device: &B::Device) -> Self {
        let e = &config.encoder;
        let h = e.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(e.layer_norm_eps)
                .init(device)
        };
        Self {
            text: TextEmbeddings::init(e, device),
            image: ImageEmbeddings {
                feature: LinearConfig::new(config.region_feature_dim, h).init(device),
                location: LinearConfig::new(5, h).init(device),
                norm: norm(),
            },
            encoder: Encoder::init(e, device),
            mlm_transform: HeadTransform::init(e, device),
            mlm_bias: Param::from_tensor(Tensor::zeros([e.vocab_size], device)),
            moc_transform: HeadTransform::init(e, device),
            moc_classifier: LinearConfig::new(h, config.num_object_classes).init(device),
            mrfr_transform: HeadTransform::init(e, device),
            mrfr_regressor: LinearConfig::new(h, config.region_feature_dim).init(device),
            pooler: LinearConfig::new(h, h).init(device),
            itm: LinearConfig::new(h, 1).init(device),
        }
    }

    /// The same model computing attention with `kernel`.
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        self.encoder.attention_kernel = kernel;
        self
    }

    /// Text-token embeddings `[batch, text_len, hidden]` of `[CLS] text [SEP]` ids (positions
    /// 0, 1, 2, ..., text segment).
    pub fn embed_text(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, text_len] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..text_len as i64, &device)
            .reshape([1, text_len])
            .repeat_dim(0, batch);
        let segments = Tensor::<B, 2, Int>::full([batch, text_len], TEXT_SEGMENT, &device);
        self.text.finish(self.text.sum(ids, positions, segments))
    }

    /// Region-token embeddings `[batch, regions, hidden]` from features `[batch, regions,
    /// feature_dim]` and 5-d boxes `[batch, regions, 5]` (image segment, the one shared position).
    pub fn embed_regions(&self, features: Tensor<B, 3>, boxes: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, regions, _] = features.dims();
        let device = features.device();
        let shared = |id: i64| Tensor::<B, 2, Int>::full([batch, regions], id, &device);
        let image = linear_tokens(&self.image.feature, features)
            + linear_tokens(&self.image.location, boxes)
            + self.text.segment.forward(shared(IMAGE_SEGMENT))
            + self.text.position.forward(shared(IMAGE_POSITION));
        self.text.dropout.forward(self.image.norm.forward(image))
    }

    /// Runs the encoder over already embedded text `[batch, text_len, hidden]` and regions
    /// `[batch, regions, hidden]` with their 1/0 masks; returns `[batch, text+regions, hidden]`.
    /// Retrieval embeds each caption and image once and pairs them here many times.
    pub fn encode_embedded(
        &self,
        text: Tensor<B, 3>,
        text_mask: Tensor<B, 2>,
        regions: Tensor<B, 3>,
        region_mask: Tensor<B, 2>,
    ) -> Tensor<B, 3> {
        let x = Tensor::cat(vec![text, regions], 1);
        let mask = Tensor::cat(vec![text_mask, region_mask], 1);
        self.encoder.forward(x, mask)
    }

    /// Embeds text and regions, runs the encoder and returns its `[batch, text+regions, hidden]`
    /// output.
    pub fn encode(&self, input: &ImageBertInput<B>) -> Tensor<B, 3> {
        self.encode_embedded(
            self.embed_text(input.text_ids.clone()),
            input.text_mask.clone(),
            self.embed_regions(input.region_features.clone(), input.region_boxes.clone()),
            input.region_mask.clone(),
        )
    }

    /// One modality alone through the encoder (embedded tokens `[batch, len, hidden]` and their
    /// 1/0 mask), mean-pooled over its real tokens and L2-normalised: `[batch, hidden]`. The
    /// cosine of a caption's and an image's is retrieval's cheap first-stage score.
    pub fn single_modality_embedding(
        &self,
        embedded: Tensor<B, 3>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let hidden = self.encoder.forward(embedded, mask.clone());
        let weights = mask.clone().unsqueeze_dim::<3>(2);
        let sum = (hidden * weights).sum_dim(1).squeeze_dim::<2>(1);
        let mean = sum / mask.sum_dim(1).clamp_min(1.0);
        let norm = mean
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        mean / norm
    }

    /// The ITM (matching) logit `[batch]` from the encoder output: pooler over `[CLS]`, then the
    /// ITM layer. Fine-tuning and retrieval scoring use it as the pair's score.
    pub fn match_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 1> {
        let [batch, _, h] = hidden.dims();
        let cls = hidden.slice([0..batch, 0..1, 0..h]).reshape([batch, h]);
        self.itm
            .forward(self.pooler.forward(cls).tanh())
            .reshape([batch])
    }

    /// Full forward: the encoder, ITM on every pair and the masked heads at the `chosen` tokens.
    pub fn forward(
        &self,
        input: &ImageBertInput<B>,
        chosen: &ChosenPositions<B>,
    ) -> ImageBertOutput<B> {
        let [batch, text_len] = input.text_ids.dims();
        let hidden = self.encode(input);
        let [_, seq, h] = hidden.dims();
        let rows = |part: Tensor<B, 3>, len: usize, picked: Tensor<B, 1, Int>| {
            part.reshape([batch * len, h]).select(0, picked)
        };
        let text = rows(
            hidden.clone().slice([0..batch, 0..text_len, 0..h]),
            text_len,
            chosen.text.clone(),
        );
        let regions = rows(
            hidden.clone().slice([0..batch, text_len..seq, 0..h]),
            seq - text_len,
            chosen.regions.clone(),
        );
        let itm_logits = self.match_logits(hidden);

        let word_table = self.text.word.weight.val(); // [vocab, hidden]
        let mlm_logits = self
            .mlm_transform
            .forward(text)
            .matmul(word_table.transpose())
            + self.mlm_bias.val().unsqueeze();
        let moc_logits = self
            .moc_classifier
            .forward(self.moc_transform.forward(regions.clone()));
        let mrfr_features = self
            .mrfr_regressor
            .forward(self.mrfr_transform.forward(regions));
        ImageBertOutput {
            mlm_logits,
            moc_logits,
            mrfr_features,
            itm_logits,
        }
    }
}
