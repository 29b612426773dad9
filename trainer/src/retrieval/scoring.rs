//! Scoring (image, caption) pairs with the cross-encoder: ImageBERT's ITM logit over the joint
//! sequence is the pair's score.
//!
//! Every image's region embeddings and every caption's text embeddings are computed once
//! ([`EmbeddedSet::new`]) and gathered for each batch of pairs, so a pair costs only the encoder.
//! [`first_stage`] is the cheap score for `--rerank K`: each caption and each image goes through
//! the encoder alone once (N + M passes instead of N × M), and the cosine of their mean-pooled
//! outputs ranks the candidates the full model then re-scores. `trainer finetune` trains that
//! cosine with its first-stage loss (`objective.first_stage_weight`).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::data::RetrievalSet;
use crate::model::imagebert::ImageBert;

/// Items embedded per call when embedding a whole set.
const EMBED_BATCH: usize = 256;

/// The whole set's embeddings, on the device.
pub struct EmbeddedSet<B: Backend> {
    /// Caption embeddings `[captions, text_len, hidden]`.
    text: Tensor<B, 3>,
    /// `[captions, text_len]`, 1 for real tokens.
    text_mask: Tensor<B, 2>,
    /// Region embeddings `[images, regions, hidden]`.
    regions: Tensor<B, 3>,
    /// `[images, regions]`, 1 for real regions.
    region_mask: Tensor<B, 2>,
}

fn chunks(n: usize, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n)
        .step_by(size.max(1))
        .map(move |s| s..(s + size).min(n))
}

fn indices<B: Backend>(
    values: impl Iterator<Item = usize>,
    device: &B::Device,
) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = values.map(|v| v as i64).collect();
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

impl<B: Backend> EmbeddedSet<B> {
    /// Embeds every caption and every image of `set` once.
    pub fn new(model: &ImageBert<B>, set: &RetrievalSet, pad_id: u32, device: &B::Device) -> Self {
        let (mut text, mut text_mask, mut regions, mut region_mask) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let longest_caption = set
            .captions
            .iter()
            .map(|c| c.text_ids.len())
            .max()
            .unwrap_or(0);
        let most_regions = set
            .images
            .iter()
            .map(|i| i.regions.len())
            .max()
            .unwrap_or(0);
        for range in chunks(set.captions.len(), EMBED_BATCH) {
            let input = set.text_input::<B>(range, pad_id, longest_caption, device);
            text.push(model.embed_text(input.ids));
            text_mask.push(input.mask);
        }
        for range in chunks(set.images.len(), EMBED_BATCH) {
            let input = set.region_input::<B>(range, most_regions, device);
            regions.push(model.embed_regions(input.features, input.boxes));
            region_mask.push(input.mask);
        }
        Self {
            text: Tensor::cat(text, 0),
            text_mask: Tensor::cat(text_mask, 0),
            regions: Tensor::cat(regions, 0),
            region_mask: Tensor::cat(region_mask, 0),
        }
    }

    /// The cross-encoder's score of each `(image, caption)` pair, `batch` pairs per encoder call.
    pub fn score(&self, model: &ImageBert<B>, pairs: &[(usize, usize)], batch: usize) -> Vec<f32> {
        let device = self.text.device();
        let mut scores = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(batch.max(1)) {
            let images = indices::<B>(chunk.iter().map(|p| p.0), &device);
            let captions = indices::<B>(chunk.iter().map(|p| p.1), &device);
            let hidden = model.encode_embedded(
                self.text.clone().select(0, captions.clone()),
                self.text_mask.clone().select(0, captions),
                self.regions.clone().select(0, images.clone()),
                self.region_mask.clone().select(0, images),
            );
            let logits = model.match_logits(hidden).into_data();
            scores.extend(logits.iter::<f32>());
        }
        scores
    }

    /// The cheap first-stage scores `[images × captions]` (row-major): cosine of the mean-pooled
    /// single-modality encoder outputs.
    pub fn first_stage(&self, model: &ImageBert<B>) -> Vec<f32> {
        let pooled = |x: Tensor<B, 3>, mask: Tensor<B, 2>| -> Tensor<B, 2> {
            let [n, len, h] = x.dims();
            let out = chunks(n, EMBED_BATCH)
                .map(|range| {
                    model.single_modality_embedding(
                        x.clone().slice([range.clone(), 0..len, 0..h]),
                        mask.clone().slice([range, 0..len]),
                    )
                })
                .collect();
            Tensor::cat(out, 0)
        };
        let text = pooled(self.text.clone(), self.text_mask.clone());
        let images = pooled(self.regions.clone(), self.region_mask.clone());
        images
            .matmul(text.transpose())
            .into_data()
            .iter::<f32>()
            .collect()
    }
}
