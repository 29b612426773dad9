//! The C4 RoI heads of the BUTD model (detectron2 `Res5ROIHeads` and `FastRCNNOutputLayers` with
//! the VG attribute branch; airsplay/py-bottom-up-attention
//! `detectron2/modeling/roi_heads/{roi_heads.py,fast_rcnn.py}`, `modeling/poolers.py`).
//!
//! * `POOLER_TYPE: "ROIPool"` (`faster_rcnn_R_101_C4_attr_caffemaxpool.yaml`): max pooling into
//!   a 14x14 grid with torchvision `RoIPool` semantics, the port of caffe's `ROIPooling` layer
//!   (`roi_pool5`, `pooled_w/h: 14`, `spatial_scale: 0.0625` in bottom-up-attention
//!   `models/vg/ResNet-101/faster_rcnn_end2end_final/test.prototxt`).
//! * `RES5HALVE: False`: `res5` keeps the 14x14 resolution (first block stride 1) and every 3x3
//!   conv of `res5` has dilation 2 and padding 2, as `res5a_branch2b` in that prototxt.
//! * The pooled feature is the mean over the 14x14 grid (`pool5`, 2048-d for ResNet-101).
//! * Box predictor: `cls_score` (`K + 1` logits, background last) and class-specific `bbox_pred`
//!   (`4 K`); attribute branch: `cls_embedding` of the arg-max class over all `K + 1` logits
//!   (`D / 8` wide), concatenated with the feature, `fc_attr` (`D / 4`), ReLU, `attr_score`
//!   (`attributes + 1`).

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::resnet::{BlockSpec, Stage};
use super::weights::{WeightError, WeightStore};
use super::{ButdConfig, FEATURE_STRIDE};

/// A PyTorch `nn.Linear` kept as `weight [in, out]` (transposed once at load) and `bias [out]`.
struct Linear<B: Backend> {
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
}

impl<B: Backend> Linear<B> {
    fn load(
        store: &mut WeightStore,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let weight: Tensor<B, 2> =
            store.tensor(&format!("{prefix}.weight"), [d_out, d_in], device)?;
        Ok(Self {
            weight: weight.transpose(),
            bias: store.tensor(&format!("{prefix}.bias"), [d_out], device)?,
        })
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.clone()) + self.bias.clone().unsqueeze_dim(0)
    }
}

/// Per-RoI outputs of the heads, one row per proposal.
pub struct RoiOutputs<B: Backend> {
    /// RoI-pooled `res4` features `[R, C4, P, P]`.
    pub pooled: Tensor<B, 4>,
    /// Mean-pooled `res5` features `[R, D]` (the region features).
    pub features: Tensor<B, 2>,
    /// Class logits `[R, K + 1]`, background last.
    pub class_logits: Tensor<B, 2>,
    /// Class-specific box deltas `[R, 4 K]`.
    pub box_deltas: Tensor<B, 2>,
    /// Attribute logits `[R, attributes + 1]`, "no attribute" last.
    pub attribute_logits: Tensor<B, 2>,
}

/// `res5` + box predictor + attribute predictor.
pub struct RoiHeads<B: Backend> {
    res5: Stage<B>,
    cls_score: Linear<B>,
    bbox_pred: Linear<B>,
    cls_embedding: Tensor<B, 2>,
    fc_attr: Linear<B>,
    attr_score: Linear<B>,
    resolution: usize,
}

impl<B: Backend> RoiHeads<B> {
    /// Loads `roi_heads.res5.*` and `roi_heads.box_predictor.{cls_score, bbox_pred,
    /// cls_embedding, fc_attr, attr_score}`.
    pub fn load(
        store: &mut WeightStore,
        config: &ButdConfig,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let d = config.feature_dim();
        let k = config.num_classes;
        let res5 = Stage::load(
            store,
            "roi_heads.res5",
            config.res5_blocks,
            BlockSpec {
                in_channels: config.res4_channels(),
                bottleneck_channels: config.res2_bottleneck_channels * 8,
                out_channels: d,
                stride: 1,
                dilation: 2,
            },
            config.bn_eps,
            device,
        )?;
        let p = "roi_heads.box_predictor";
        Ok(Self {
            res5,
            cls_score: Linear::load(store, &format!("{p}.cls_score"), d, k + 1, device)?,
            bbox_pred: Linear::load(store, &format!("{p}.bbox_pred"), d, 4 * k, device)?,
            cls_embedding: store.tensor(
                &format!("{p}.cls_embedding.weight"),
                [k + 1, d / 8],
                device,
            )?,
            fc_attr: Linear::load(store, &format!("{p}.fc_attr"), d + d / 8, d / 4, device)?,
            attr_score: Linear::load(
                store,
                &format!("{p}.attr_score"),
                d / 4,
                config.num_attributes + 1,
                device,
            )?,
            resolution: config.pooler_resolution,
        })
    }

    /// Runs the heads on `boxes` (network-input pixels, at least one) over `res4` `[1, C, H, W]`.
    pub fn forward(&self, res4: Tensor<B, 4>, boxes: &[[f32; 4]]) -> RoiOutputs<B> {
        let pooled = roi_pool(res4, boxes, 1.0 / FEATURE_STRIDE as f32, self.resolution);
        let x = self.res5.forward(pooled.clone());
        let [r, d, _, _] = x.dims();
        let features = x.mean_dim(3).mean_dim(2).reshape([r, d]);
        let class_logits = self.cls_score.forward(features.clone());
        let box_deltas = self.bbox_pred.forward(features.clone());
        let predicted: Tensor<B, 1, Int> = class_logits.clone().argmax(1).reshape([r]);
        let embedding = self.cls_embedding.clone().select(0, predicted);
        let attr_input = Tensor::cat(vec![features.clone(), embedding], 1);
        let attribute_logits = self
            .attr_score
            .forward(relu(self.fc_attr.forward(attr_input)));
        RoiOutputs {
            pooled,
            features,
            class_logits,
            box_deltas,
            attribute_logits,
        }
    }
}

/// RoI max pooling with torchvision `roi_pool` semantics (caffe `ROIPooling`): box corners scaled
/// by `spatial_scale` and rounded half away from zero, the box is `end - start + 1` cells wide
/// (at least 1), bin `i` covers `[floor(i * bin), ceil((i + 1) * bin))` offset by the start and
/// clipped to the map; an empty bin is 0.
///
/// `features` is `[1, C, H, W]`; the result is `[boxes.len(), C, size, size]`. The pooling runs
/// on the host.
pub fn roi_pool<B: Backend>(
    features: Tensor<B, 4>,
    boxes: &[[f32; 4]],
    spatial_scale: f32,
    size: usize,
) -> Tensor<B, 4> {
    let device = features.device();
    let [_, c, h, w] = features.dims();
    let input: Vec<f32> = features.into_data().to_vec().expect("f32 features");
    let mut out = vec![0.0f32; boxes.len() * c * size * size];
    for (n, b) in boxes.iter().enumerate() {
        let start_w = (b[0] * spatial_scale).round() as i64;
        let start_h = (b[1] * spatial_scale).round() as i64;
        let end_w = (b[2] * spatial_scale).round() as i64;
        let end_h = (b[3] * spatial_scale).round() as i64;
        let bin_w = (end_w - start_w + 1).max(1) as f32 / size as f32;
        let bin_h = (end_h - start_h + 1).max(1) as f32 / size as f32;
        let span = |i: usize, bin: f32, start: i64, limit: usize| {
            let lo = ((i as f32 * bin).floor() as i64 + start).clamp(0, limit as i64) as usize;
            let hi = (((i + 1) as f32 * bin).ceil() as i64 + start).clamp(0, limit as i64) as usize;
            lo..hi
        };
        for ph in 0..size {
            let rows = span(ph, bin_h, start_h, h);
            for pw in 0..size {
                let cols = span(pw, bin_w, start_w, w);
                let empty = rows.is_empty() || cols.is_empty();
                for ch in 0..c {
                    let plane = &input[ch * h * w..(ch + 1) * h * w];
                    let mut max = if empty { 0.0 } else { f32::MIN };
                    for y in rows.clone() {
                        for &v in &plane[y * w + cols.start..y * w + cols.end] {
                            if v > max {
                                max = v;
                            }
                        }
                    }
                    out[((n * c + ch) * size + ph) * size + pw] = max;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [boxes.len(), c, size, size]), &device)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    #[test]
    fn roi_pool_takes_bin_maxima_and_zero_for_empty_bins() {
        let device = Default::default();
        // One channel, 4x4 map with value = 10 * y + x.
        let values: Vec<f32> = (0..16).map(|i| (10 * (i / 4) + i % 4) as f32).collect();
        let map = Tensor::<NdArray, 4>::from_data(TensorData::new(values, [1, 1, 4, 4]), &device);
        // The whole map (scale 1: cells 0..=3) into 2x2 bins of 2x2 cells.
        let whole = roi_pool(map.clone(), &[[0.0, 0.0, 3.0, 3.0]], 1.0, 2);
        let got: Vec<f32> = whole.into_data().to_vec().unwrap();
        assert_eq!(got, vec![11.0, 13.0, 31.0, 33.0]);
        // A box entirely right of the map gives empty bins.
        let outside = roi_pool(map, &[[8.0, 0.0, 9.0, 1.0]], 1.0, 2);
        let got: Vec<f32> = outside.into_data().to_vec().unwrap();
        assert_eq!(got, vec![0.0; 4]);
    }
}
