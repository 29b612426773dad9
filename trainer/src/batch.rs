//! Assembling pre-training batches: ITM pairing, masking ([`crate::objectives`]), padding, and
//! the tensors the model and the losses take.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;

use crate::model::imagebert::{ChosenPositions, ImageBertInput};
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

/// Everything the four losses compare the model's output with, and which tokens the masked heads
/// predict.
///
/// The masked heads see only the chosen tokens, so their labels are listed in the order of
/// [`ChosenPositions`]. A batch with no chosen token (every pair an ITM negative) lists one
/// placeholder (the first token, labelled [`IGNORE`]) so no tensor is empty; with
/// [`FixedShapes`], placeholders fill each list up to its multiple.
#[derive(Debug, Clone)]
pub struct PretrainTargets<B: Backend> {
    /// The text tokens and regions the masked heads predict.
    pub chosen: ChosenPositions<B>,
    /// MLM label of each chosen text token, `[chosen_tokens]` ([`IGNORE`] for a placeholder).
    pub mlm_labels: Tensor<B, 1, Int>,
    /// MOC label (the detector's class) of each chosen region, `[chosen_regions]`
    /// ([`IGNORE`] for a placeholder, which MRFR skips too).
    pub moc_labels: Tensor<B, 1, Int>,
    /// Original feature of each chosen region, `[chosen_regions, feature_dim]` (MRFR's target).
    pub mrfr_targets: Tensor<B, 2>,
    /// 1 for matched pairs, 0 for ITM negatives, `[batch]`.
    pub itm_labels: Tensor<B, 1>,
}

/// Shapes every batch is padded to (`train.fixed_shapes`), so that a GPU sees a handful of
/// distinct tensor shapes instead of a new one almost every step: each new shape can cost kernel
/// compilations, fusion traces and autotune runs. Padding changes no loss: padded text and
/// regions are masked out of attention, and padded chosen positions are placeholders labelled
/// [`IGNORE`]. (Dropout draws its masks over the padded shapes, so they differ.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedShapes {
    /// Text tokens every row is padded to (a longer caption keeps its length).
    pub text_len: usize,
    /// Regions every row is padded to (an image with more keeps them).
    pub regions: usize,
    /// The chosen text tokens and chosen regions are each padded with placeholders to a multiple
    /// of this.
    pub chosen_multiple: usize,
}

impl FixedShapes {
    /// The chosen-list multiple of `train.fixed_shapes`.
    pub const CHOSEN_MULTIPLE: usize = 64;

    /// Text padded to `text_len`, regions to `regions`, chosen lists to [`Self::CHOSEN_MULTIPLE`].
    pub fn padded_to(text_len: usize, regions: usize) -> Self {
        Self {
            text_len,
            regions,
            chosen_multiple: Self::CHOSEN_MULTIPLE,
        }
    }
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
    build_shaped_pretrain_batch(
        samples,
        feature_dim,
        special,
        vocab_size,
        config,
        None,
        rng,
        device,
    )
}

/// [`build_pretrain_batch`], padded to `fixed` shapes when given. The random draws are the same
/// either way, so the same `rng` state gives the same pairs and masks.
#[allow(clippy::too_many_arguments)]
pub fn build_shaped_pretrain_batch<B: Backend>(
    samples: &[PretrainSample],
    feature_dim: usize,
    special: SpecialTokens,
    vocab_size: usize,
    config: &MaskingConfig,
    fixed: Option<&FixedShapes>,
    rng: &mut impl Rng,
    device: &B::Device,
) -> (ImageBertInput<B>, PretrainTargets<B>) {
    let batch = samples.len();
    let pairings = pair_for_itm(batch, config, rng);
    let text_len = pairings
        .iter()
        .map(|p| samples[p.caption_of].text_ids.len())
        .max()
        .unwrap_or(0)
        .max(fixed.map_or(0, |f| f.text_len));
    let regions = pairings
        .iter()
        .map(|p| samples[p.image_of].regions())
        .max()
        .unwrap_or(0)
        .max(fixed.map_or(0, |f| f.regions));

    let mut ids = vec![i64::from(special.pad); batch * text_len];
    let mut text_mask = vec![0.0f32; batch * text_len];
    let mut chosen_text = Vec::new();
    let mut mlm_labels = Vec::new();
    let mut features = vec![0.0f32; batch * regions * feature_dim];
    let mut boxes = vec![0.0f32; batch * regions * 5];
    let mut region_mask = vec![0.0f32; batch * regions];
    let mut chosen_regions = Vec::new();
    let mut moc_labels = Vec::new();
    let mut mrfr_targets = Vec::new();
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
            if label != IGNORE {
                chosen_text.push((t0 + i) as i64);
                mlm_labels.push(label);
            }
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
            if !masked.zeroed[r] {
                features[f0..f0 + feature_dim].copy_from_slice(source);
            }
            boxes[slot * 5..slot * 5 + 5].copy_from_slice(&image.region_boxes[r]);
            region_mask[slot] = 1.0;
            if masked.chosen[r] {
                chosen_regions.push(slot as i64);
                moc_labels.push(i64::from(image.region_classes[r]));
                mrfr_targets.extend_from_slice(source);
            }
        }
    }

    // Placeholders: one where nothing was chosen, and up to the fixed multiple.
    let multiple = fixed.map_or(1, |f| f.chosen_multiple.max(1));
    let padded = |count: usize| count.max(1).next_multiple_of(multiple);
    let text_slots = padded(chosen_text.len());
    chosen_text.resize(text_slots, 0);
    mlm_labels.resize(text_slots, IGNORE);
    let region_slots = padded(chosen_regions.len());
    chosen_regions.resize(region_slots, 0);
    moc_labels.resize(region_slots, IGNORE);
    mrfr_targets.resize(region_slots * feature_dim, 0.0);

    let ints = |values: Vec<i64>, shape: [usize; 2]| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(values, shape), device)
    };
    let list = |values: Vec<i64>| {
        let n = values.len();
        Tensor::<B, 1, Int>::from_data(TensorData::new(values, [n]), device)
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
    let chosen = chosen_regions.len();
    let targets = PretrainTargets {
        chosen: ChosenPositions {
            text: list(chosen_text),
            regions: list(chosen_regions),
        },
        mlm_labels: list(mlm_labels),
        moc_labels: list(moc_labels),
        mrfr_targets: floats2(mrfr_targets, [chosen, feature_dim]),
        itm_labels: Tensor::from_data(TensorData::new(itm_labels, [batch]), device),
    };
    (input, targets)
}
