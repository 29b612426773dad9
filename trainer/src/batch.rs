//! Assembling pre-training batches: ITM pairing, masking ([`crate::objectives`]), padding, and
//! the tensors the model and the losses take.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;

use crate::model::imagebert::ImageBertInput;
use crate::objectives::{IGNORE, MaskingConfig, mask_regions, mask_text, pair_for_itm};
use wordpiece::SpecialTokens;

/// One image–text pair as the trainer reads it from a pair shard joined with its region shard.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainSample {
    /// `[CLS] caption [SEP]` WordPiece ids.
    pub text_ids: Vec<u32>,
    /// Region features, `regions × feature_dim`, one region after another.
    pub region_features: Vec<f32>,
    /// The paper's 5-d box per region.
    pub region_boxes: Vec<[f32; 5]>,
    /// Detector class per region (MOC's target).
    pub region_classes: Vec<u32>,
}

impl PretrainSample {
    /// Number of regions.
    pub fn regions(&self) -> usize {
        self.region_boxes.len()
    }
}

/// Everything the four losses compare the model's output with.
#[derive(Debug, Clone)]
pub struct PretrainTargets<B: Backend> {
    /// MLM labels `[batch, text_len]`, [`IGNORE`] where no loss is taken.
    pub mlm_labels: Tensor<B, 2, Int>,
    /// MOC labels `[batch, regions]`, [`IGNORE`] where no loss is taken.
    pub moc_labels: Tensor<B, 2, Int>,
    /// Original region features `[batch, regions, feature_dim]` (MRFR's target).
    pub mrfr_targets: Tensor<B, 3>,
    /// 1 where MRFR loss is taken, `[batch, regions]`.
    pub mrfr_weights: Tensor<B, 2>,
    /// 1 for matched pairs, 0 for ITM negatives, `[batch]`.
    pub itm_labels: Tensor<B, 1>,
}

/// Builds one batch from `samples`: pairs rows for ITM, masks positive rows, pads text and regions
/// to the longest in the batch.
pub fn build_pretrain_batch<B: Backend>(
    samples: &[PretrainSample],
    feature_dim: usize,
    special: SpecialTokens,
    vocab_size: usize,
    config: &MaskingConfig,
    rng: &mut impl Rng,
    device: &B::Device,
) -> (ImageBertInput<B>, PretrainTargets<B>) {
    let batch = samples.len();
    let pairings = pair_for_itm(batch, config, rng);
    let text_len = pairings
        .iter()
        .map(|p| samples[p.caption_of].text_ids.len())
        .max()
        .unwrap_or(0);
    let regions = pairings
        .iter()
        .map(|p| samples[p.image_of].regions())
        .max()
        .unwrap_or(0);

    let mut ids = vec![i64::from(special.pad); batch * text_len];
    let mut text_mask = vec![0.0f32; batch * text_len];
    let mut mlm_labels = vec![IGNORE; batch * text_len];
    let mut features = vec![0.0f32; batch * regions * feature_dim];
    let mut targets = vec![0.0f32; batch * regions * feature_dim];
    let mut boxes = vec![0.0f32; batch * regions * 5];
    let mut region_mask = vec![0.0f32; batch * regions];
    let mut moc_labels = vec![IGNORE; batch * regions];
    let mut mrfr_weights = vec![0.0f32; batch * regions];
    let mut itm_labels = vec![0.0f32; batch];

    for (row, pairing) in pairings.iter().enumerate() {
        let caption = &samples[pairing.caption_of].text_ids;
        let image = &samples[pairing.image_of];
        let positive = pairing.is_match();
        itm_labels[row] = if positive { 1.0 } else { 0.0 };

        let text = if positive {
            mask_text(caption, special, vocab_size, config, rng)
        } else {
            crate::objectives::MaskedText {
                ids: caption.clone(),
                labels: vec![IGNORE; caption.len()],
            }
        };
        let t0 = row * text_len;
        for (i, (&id, &label)) in text.ids.iter().zip(&text.labels).enumerate() {
            ids[t0 + i] = i64::from(id);
            text_mask[t0 + i] = 1.0;
            mlm_labels[t0 + i] = label;
        }

        let n = image.regions();
        let masked = if positive {
            mask_regions(n, config, rng)
        } else {
            crate::objectives::MaskedRegions {
                chosen: vec![false; n],
                zeroed: vec![false; n],
            }
        };
        for r in 0..n {
            let slot = row * regions + r;
            let source = &image.region_features[r * feature_dim..(r + 1) * feature_dim];
            let f0 = slot * feature_dim;
            targets[f0..f0 + feature_dim].copy_from_slice(source);
            if !masked.zeroed[r] {
                features[f0..f0 + feature_dim].copy_from_slice(source);
            }
            boxes[slot * 5..slot * 5 + 5].copy_from_slice(&image.region_boxes[r]);
            region_mask[slot] = 1.0;
            if masked.chosen[r] {
                moc_labels[slot] = i64::from(image.region_classes[r]);
                mrfr_weights[slot] = 1.0;
            }
        }
    }

    let ints = |values: Vec<i64>, shape: [usize; 2]| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(values, shape), device)
    };
    let floats2 = |values: Vec<f32>, shape: [usize; 2]| {
        Tensor::<B, 2>::from_data(TensorData::new(values, shape), device)
    };
    let floats3 = |values: Vec<f32>, shape: [usize; 3]| {
        Tensor::<B, 3>::from_data(TensorData::new(values, shape), device)
    };
    let input = ImageBertInput {
        text_ids: ints(ids, [batch, text_len]),
        text_mask: floats2(text_mask, [batch, text_len]),
        region_features: floats3(features, [batch, regions, feature_dim]),
        region_boxes: floats3(boxes, [batch, regions, 5]),
        region_mask: floats2(region_mask, [batch, regions]),
    };
    let targets = PretrainTargets {
        mlm_labels: ints(mlm_labels, [batch, text_len]),
        moc_labels: ints(moc_labels, [batch, regions]),
        mrfr_targets: floats3(targets, [batch, regions, feature_dim]),
        mrfr_weights: floats2(mrfr_weights, [batch, regions]),
        itm_labels: Tensor::from_data(TensorData::new(itm_labels, [batch]), device),
    };
    (input, targets)
}
