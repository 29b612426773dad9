//! The bottom-up-attention ("BUTD") Faster R-CNN of Anderson et al. (2018), the detector whose
//! region features ImageBERT uses, as ported to detectron2 by airsplay/py-bottom-up-attention
//! (`configs/VG-Detection/faster_rcnn_R_101_C4_attr_caffemaxpool.yaml` over
//! `configs/Base-RCNN-C4.yaml` and `detectron2/config/defaults.py`).
//!
//! Pipeline for one image (each stage in its own module):
//! 1. [`preprocess`]: shortest side to 600 (longest at most 1000) with PIL-bilinear resampling,
//!    BGR minus the caffe pixel means;
//! 2. [`resnet`]: ResNet-101 C4 backbone up to `res4` (stride 16);
//! 3. [`rpn`]: 12 anchors per cell, 6000 best before NMS 0.7, 300 after;
//! 4. [`roi_heads`]: 14x14 RoI max pooling on `res4`, `res5` (stride 1, dilation 2), mean pool
//!    to the 2048-d feature, class / box / attribute predictors;
//! 5. [`select`]: the `generate_tsv.py` rule (per-class NMS 0.3, confidence 0.2, 10 to 100
//!    regions).
//!
//! Weights come from the converted detectron2 pickle (`tools/butd_to_safetensors.py`), loaded by
//! [`weights`] under the detectron2 key names.

pub mod preprocess;
pub mod region_detector;
pub mod resnet;
pub mod roi_heads;
pub mod rpn;
pub mod select;
pub mod weights;

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::ops::boxes::{BoxCoder, clip_box};
pub use preprocess::{ButdImage, ImageError};
use resnet::{BackboneFeatures, ResNetC4};
use roi_heads::{RoiHeads, RoiOutputs};
use rpn::{Proposals, Rpn, RpnOutputs};
use select::{Selection, SelectionRule, select_regions};
pub use weights::{WeightError, WeightStore};

/// Stride of `res4` relative to the input: stem 4 (conv /2, max pool /2) × `res3` 2 × `res4` 2
/// (detectron2 `ResNet._out_feature_strides`).
pub const FEATURE_STRIDE: usize = 16;

/// Sizes and thresholds of a BUTD detector. [`ButdConfig::resnet101_vg`] is the real model;
/// [`ButdConfig::tiny`] the small model the tests build with `tools/butd_reference.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ButdConfig {
    /// Stem output channels (`MODEL.RESNETS.STEM_OUT_CHANNELS`, 64).
    pub stem_out_channels: usize,
    /// `res2` output channels (`MODEL.RESNETS.RES2_OUT_CHANNELS`, 256); doubles per stage.
    pub res2_out_channels: usize,
    /// `res2` bottleneck width (`NUM_GROUPS * WIDTH_PER_GROUP`, 1 x 64); doubles per stage.
    pub res2_bottleneck_channels: usize,
    /// Blocks in `res2`, `res3`, `res4` (`DEPTH: 101` → `[3, 4, 23]`, `build_resnet_backbone`).
    pub blocks_per_stage: [usize; 3],
    /// Blocks in the `res5` head (3, `Res5ROIHeads._build_res5_block`).
    pub res5_blocks: usize,
    /// Frozen BatchNorm epsilon (1e-5, `FrozenBatchNorm2d`).
    pub bn_eps: f32,
    /// Hidden channels of the RPN's 3x3 conv (`PROPOSAL_GENERATOR.HID_CHANNELS`, 512).
    pub rpn_hidden_channels: usize,
    /// Anchor side lengths in input pixels (`ANCHOR_GENERATOR.SIZES`, `[64, 128, 256, 512]`).
    pub anchor_sizes: Vec<f32>,
    /// Anchor aspect ratios `h / w` (`ANCHOR_GENERATOR.ASPECT_RATIOS`, `[0.5, 1, 2]`).
    pub anchor_aspect_ratios: Vec<f32>,
    /// Anchors kept before the RPN NMS (`RPN.PRE_NMS_TOPK_TEST`, 6000 in `Base-RCNN-C4.yaml`;
    /// `TEST.RPN_PRE_NMS_TOP_N` in bottom-up-attention's `lib/fast_rcnn/config.py`).
    pub rpn_pre_nms_topk: usize,
    /// Proposals kept after the RPN NMS: 300, as bottom-up-attention's
    /// `TEST.RPN_POST_NMS_TOP_N` and the port's extraction scripts
    /// (`cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 300`; the detectron2 yaml default is 1000).
    pub rpn_post_nms_topk: usize,
    /// RPN NMS IoU threshold (`RPN.NMS_THRESH`, 0.7).
    pub rpn_nms_threshold: f32,
    /// Proposals with a side `<=` this many input pixels are dropped
    /// (`PROPOSAL_GENERATOR.MIN_SIZE`, 0).
    pub rpn_min_box_size: f32,
    /// RoI pooling grid (`ROI_BOX_HEAD.POOLER_RESOLUTION`, 14).
    pub pooler_resolution: usize,
    /// Foreground classes (`ROI_HEADS.NUM_CLASSES`, 1600 Visual Genome objects).
    pub num_classes: usize,
    /// Attribute classes (`ROI_BOX_HEAD.NUM_ATTRS`, 400).
    pub num_attributes: usize,
    /// Fast R-CNN box-delta weights (`ROI_BOX_HEAD.BBOX_REG_WEIGHTS`, `(10, 10, 5, 5)`).
    pub box_reg_weights: [f32; 4],
    /// Per-class NMS threshold of the region selection (`cfg.TEST.NMS`, 0.3).
    pub nms_threshold: f32,
    /// Confidence a region needs (`conf_thresh=0.2` in `generate_tsv.py`).
    pub conf_threshold: f32,
    /// Fewest regions per image (`MIN_BOXES = 10`).
    pub min_boxes: usize,
    /// Most regions per image (`MAX_BOXES = 100`).
    pub max_boxes: usize,
    /// Caffe pixel means in BGR order (`PIXEL_MEAN: [102.9801, 115.9465, 122.7717]`).
    pub pixel_mean_bgr: [f32; 3],
    /// Target of the shortest side (`INPUT.MIN_SIZE_TEST = 600` in the extraction scripts,
    /// `TEST.SCALES = (600,)` in bottom-up-attention).
    pub min_size: usize,
    /// Cap on the longest side (`INPUT.MAX_SIZE_TEST = 1000`, `TEST.MAX_SIZE`).
    pub max_size: usize,
}

impl ButdConfig {
    /// The released Visual Genome ResNet-101 model (`faster_rcnn_from_caffe_attr.pkl`).
    pub fn resnet101_vg() -> Self {
        Self {
            stem_out_channels: 64,
            res2_out_channels: 256,
            res2_bottleneck_channels: 64,
            blocks_per_stage: [3, 4, 23],
            res5_blocks: 3,
            bn_eps: 1e-5,
            rpn_hidden_channels: 512,
            anchor_sizes: vec![64.0, 128.0, 256.0, 512.0],
            anchor_aspect_ratios: vec![0.5, 1.0, 2.0],
            rpn_pre_nms_topk: 6000,
            rpn_post_nms_topk: 300,
            rpn_nms_threshold: 0.7,
            rpn_min_box_size: 0.0,
            pooler_resolution: 14,
            num_classes: 1600,
            num_attributes: 400,
            box_reg_weights: [10.0, 10.0, 5.0, 5.0],
            nms_threshold: 0.3,
            conf_threshold: 0.2,
            min_boxes: 10,
            max_boxes: 100,
            pixel_mean_bgr: [102.9801, 115.9465, 122.7717],
            min_size: 600,
            max_size: 1000,
        }
    }

    /// A tiny model of the same structure for tests (`tools/butd_reference.py` builds its
    /// weights): widths 8/16/32/64/128, blocks `[1, 2, 2]` + 2, 10 classes, 6 attributes,
    /// inputs of 96 to 160 pixels. Thresholds are the real ones.
    pub fn tiny() -> Self {
        Self {
            stem_out_channels: 8,
            res2_out_channels: 16,
            res2_bottleneck_channels: 4,
            blocks_per_stage: [1, 2, 2],
            res5_blocks: 2,
            rpn_hidden_channels: 16,
            anchor_sizes: vec![16.0, 32.0, 64.0, 128.0],
            rpn_pre_nms_topk: 200,
            rpn_post_nms_topk: 40,
            num_classes: 10,
            num_attributes: 6,
            min_size: 96,
            max_size: 160,
            ..Self::resnet101_vg()
        }
    }

    /// Channels of `res4` (`res2` × 4).
    pub fn res4_channels(&self) -> usize {
        self.res2_out_channels * 4
    }

    /// Width of the pooled region feature (`res2` × 8: 2048 for ResNet-101).
    pub fn feature_dim(&self) -> usize {
        self.res2_out_channels * 8
    }

    /// Checks the values that would otherwise fail deep inside the model.
    pub fn validate(&self) -> Result<(), ButdError> {
        let problem = if self.stem_out_channels == 0 || self.res2_out_channels == 0 {
            Some("channel widths must be positive")
        } else if self.anchor_sizes.is_empty() || self.anchor_aspect_ratios.is_empty() {
            Some("anchor sizes and aspect ratios must be non-empty")
        } else if self.num_classes == 0 {
            Some("num_classes must be positive")
        } else if self.min_size == 0 || self.max_size < self.min_size {
            Some("need 0 < min_size <= max_size")
        } else if self.pooler_resolution == 0 || self.rpn_post_nms_topk == 0 {
            Some("pooler_resolution and rpn_post_nms_topk must be positive")
        } else {
            None
        };
        match problem {
            Some(message) => Err(ButdError::Config(message.to_owned())),
            None => Ok(()),
        }
    }

    fn selection_rule(&self) -> SelectionRule {
        SelectionRule {
            nms_threshold: self.nms_threshold,
            conf_threshold: self.conf_threshold,
            min_boxes: self.min_boxes,
            max_boxes: self.max_boxes,
        }
    }
}

/// Why a detector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ButdError {
    /// The checkpoint does not match the configuration.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The configuration is inconsistent.
    #[error("invalid BUTD configuration: {0}")]
    Config(String),
}

/// The regions kept for one image, in the order of the selection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ButdRegions {
    /// Width of the original image in pixels.
    pub image_width: usize,
    /// Height of the original image in pixels.
    pub image_height: usize,
    /// Region boxes `[x1, y1, x2, y2]` in original pixels: the RPN proposals the features were
    /// pooled from ("keep the original boxes", `generate_tsv.py`).
    pub boxes: Vec<[f32; 4]>,
    /// The same proposals refined by the class-specific box regression of each region's class
    /// (the detectron2 port's `pred_boxes`), in original pixels.
    pub refined_boxes: Vec<[f32; 4]>,
    /// Foreground class per region, 0-based over the `num_classes` objects.
    pub class_ids: Vec<u32>,
    /// Confidence of each region's class.
    pub class_scores: Vec<f32>,
    /// Most probable attribute per region, 0-based over the `num_attributes` attributes.
    pub attribute_ids: Vec<u32>,
    /// Its probability (softmax over the attributes without the "no attribute" logit, as the
    /// port's `demo_feature_extraction_attr.ipynb`).
    pub attribute_scores: Vec<f32>,
    /// Pooled features, `boxes.len() x feature_dim` row-major.
    pub features: Vec<f32>,
    /// Width of one feature row.
    pub feature_dim: usize,
}

impl ButdRegions {
    /// Number of regions.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether no region was found (only when the RPN proposes nothing).
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

/// Every intermediate of one image's detection, for checking against a reference.
pub struct ButdTrace<B: Backend> {
    /// The resized RGB image the network saw.
    pub resized: ButdImage,
    /// The network input `[1, 3, H, W]` (BGR minus means).
    pub input: Tensor<B, 4>,
    /// Backbone stage outputs.
    pub backbone: BackboneFeatures<B>,
    /// RPN head outputs.
    pub rpn: RpnOutputs<B>,
    /// Proposals in network-input pixels.
    pub proposals: Proposals,
    /// RoI head outputs; `None` when there are no proposals.
    pub roi: Option<RoiOutputs<B>>,
    /// Which proposals were kept, with classes and confidences.
    pub selection: Selection,
}

/// The BUTD detector on backend `B`.
pub struct ButdDetector<B: Backend> {
    config: ButdConfig,
    backbone: ResNetC4<B>,
    rpn: Rpn<B>,
    roi_heads: RoiHeads<B>,
    device: B::Device,
}

impl<B: Backend> ButdDetector<B> {
    /// Loads a safetensors checkpoint with detectron2 key names; every tensor must exist with
    /// the shape `config` implies and none may be left over.
    pub fn load(path: &Path, config: ButdConfig, device: &B::Device) -> Result<Self, ButdError> {
        Self::from_store(WeightStore::open(path)?, config, device)
    }

    /// Builds the detector from an opened checkpoint.
    pub fn from_store(
        mut store: WeightStore,
        config: ButdConfig,
        device: &B::Device,
    ) -> Result<Self, ButdError> {
        config.validate()?;
        let backbone = ResNetC4::load(&mut store, &config, device)?;
        let rpn = Rpn::load(&mut store, &config, device)?;
        let roi_heads = RoiHeads::load(&mut store, &config, device)?;
        store.finish()?;
        Ok(Self {
            config,
            backbone,
            rpn,
            roi_heads,
            device: device.clone(),
        })
    }

    /// The configuration the detector was built with.
    pub fn config(&self) -> &ButdConfig {
        &self.config
    }

    /// Regions of each image; images run one at a time, as in the reference extraction, so no
    /// padding couples them.
    pub fn detect(&self, images: &[ButdImage]) -> Vec<ButdRegions> {
        images
            .iter()
            .map(|image| self.detect_traced(image).0)
            .collect()
    }

    /// Regions of one image together with every intermediate.
    pub fn detect_traced(&self, image: &ButdImage) -> (ButdRegions, ButdTrace<B>) {
        let resized = self.resize(image);
        self.detect_resized(resized, image.width(), image.height())
    }

    /// `image` resized to the network's input size ([`preprocess::resized_size`]); the host part
    /// of [`ButdDetector::detect`], which `detector extract` runs on its decoding threads.
    pub fn resize(&self, image: &ButdImage) -> ButdImage {
        let cfg = &self.config;
        let (height, width) =
            preprocess::resized_size(image.height(), image.width(), cfg.min_size, cfg.max_size);
        image.resize_bilinear(width, height)
    }

    /// Regions of an image already [`ButdDetector::resize`]d from an original of
    /// `original_width x original_height` pixels (boxes come back in original pixels).
    pub fn detect_resized(
        &self,
        resized: ButdImage,
        original_width: usize,
        original_height: usize,
    ) -> (ButdRegions, ButdTrace<B>) {
        let cfg = &self.config;
        let (height, width) = (resized.height(), resized.width());
        let input = preprocess::to_input::<B>(&resized, cfg.pixel_mean_bgr, &self.device);
        let backbone = self.backbone.forward(input.clone());
        let rpn = self.rpn.forward(backbone.res4.clone());
        let proposals = self.rpn.proposals(&rpn, height, width);
        let mut regions = ButdRegions {
            image_width: original_width,
            image_height: original_height,
            boxes: Vec::new(),
            refined_boxes: Vec::new(),
            class_ids: Vec::new(),
            class_scores: Vec::new(),
            attribute_ids: Vec::new(),
            attribute_scores: Vec::new(),
            features: Vec::new(),
            feature_dim: cfg.feature_dim(),
        };
        let mut selection = Selection {
            indices: Vec::new(),
            class_ids: Vec::new(),
            scores: Vec::new(),
        };
        let roi = if proposals.boxes.is_empty() {
            None
        } else {
            let roi = self
                .roi_heads
                .forward(backbone.res4.clone(), &proposals.boxes);
            let probs: Vec<f32> = to_vec(softmax(roi.class_logits.clone(), 1));
            selection = select_regions(
                &proposals.boxes,
                &probs,
                cfg.num_classes,
                &cfg.selection_rule(),
            );
            self.fill_regions(&mut regions, &roi, &proposals, &selection, (height, width));
            Some(roi)
        };
        let trace = ButdTrace {
            resized,
            input,
            backbone,
            rpn,
            proposals,
            roi,
            selection,
        };
        (regions, trace)
    }

    /// Boxes, attributes and features of the selected proposals, in original pixels.
    fn fill_regions(
        &self,
        regions: &mut ButdRegions,
        roi: &RoiOutputs<B>,
        proposals: &Proposals,
        selection: &Selection,
        (height, width): (usize, usize),
    ) {
        let cfg = &self.config;
        let n = selection.indices.len();
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                selection
                    .indices
                    .iter()
                    .map(|&i| i as i64)
                    .collect::<Vec<_>>(),
                [n],
            ),
            &self.device,
        );
        let na = cfg.num_attributes;
        let attr_logits = roi.attribute_logits.clone().select(0, index.clone());
        let attr_probs: Vec<f32> = to_vec(softmax(attr_logits.narrow(1, 0, na), 1));
        let deltas: Vec<f32> = to_vec(roi.box_deltas.clone().select(0, index.clone()));
        regions.features = to_vec(roi.features.clone().select(0, index));

        let coder = BoxCoder::new(cfg.box_reg_weights);
        let (sx, sy) = (
            regions.image_width as f32 / width as f32,
            regions.image_height as f32 / height as f32,
        );
        let (ow, oh) = (regions.image_width as f32, regions.image_height as f32);
        // detectron2 `detector_postprocess`: scale each axis to the original size, then clip.
        let to_original = |b: [f32; 4]| {
            let mut o = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
            clip_box(&mut o, ow, oh);
            o
        };
        for (row, (&i, &class)) in selection
            .indices
            .iter()
            .zip(&selection.class_ids)
            .enumerate()
        {
            let proposal = proposals.boxes[i];
            let d = &deltas[(row * cfg.num_classes + class) * 4..][..4];
            let mut refined = coder.decode(&proposal, &[d[0], d[1], d[2], d[3]]);
            clip_box(&mut refined, width as f32, height as f32);
            regions.boxes.push(to_original(proposal));
            regions.refined_boxes.push(to_original(refined));
            let probs = &attr_probs[row * na..(row + 1) * na];
            let (best, score) =
                probs
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |acc, (a, &p)| {
                            if p > acc.1 { (a, p) } else { acc }
                        },
                    );
            regions.attribute_ids.push(best as u32);
            regions.attribute_scores.push(score);
        }
        regions.class_ids = selection.class_ids.iter().map(|&c| c as u32).collect();
        regions.class_scores = selection.scores.clone();
    }
}

/// A float tensor's values, row-major.
fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().to_vec().expect("f32 tensor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_are_valid_and_inconsistent_ones_are_refused() {
        ButdConfig::resnet101_vg().validate().unwrap();
        ButdConfig::tiny().validate().unwrap();
        assert_eq!(ButdConfig::resnet101_vg().feature_dim(), 2048);
        assert_eq!(ButdConfig::resnet101_vg().res4_channels(), 1024);
        let bad = ButdConfig {
            min_size: 800,
            max_size: 600,
            ..ButdConfig::resnet101_vg()
        };
        assert!(matches!(bad.validate(), Err(ButdError::Config(_))));
        let bad = ButdConfig {
            anchor_sizes: Vec::new(),
            ..ButdConfig::tiny()
        };
        assert!(matches!(bad.validate(), Err(ButdError::Config(_))));
    }
}
