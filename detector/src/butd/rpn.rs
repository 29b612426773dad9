//! The region proposal network on `res4` (detectron2 `StandardRPNHead`, `DefaultAnchorGenerator`,
//! `find_top_rpn_proposals`; airsplay/py-bottom-up-attention
//! `detectron2/modeling/proposal_generator/{rpn.py,rpn_outputs.py}`,
//! `detectron2/modeling/anchor_generator.py`).

use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use super::weights::{WeightError, WeightStore};
use super::{ButdConfig, FEATURE_STRIDE};
use crate::ops::boxes::{BoxCoder, clip_box};
use crate::ops::nms::nms;

/// RPN box-delta weights, `MODEL.RPN.BBOX_REG_WEIGHTS` (detectron2 `config/defaults.py`).
pub const RPN_BOX_WEIGHTS: [f32; 4] = [1.0, 1.0, 1.0, 1.0];

/// A plain conv with bias (the RPN head uses `nn.Conv2d`, no norm).
struct Conv<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    padding: usize,
}

impl<B: Backend> Conv<B> {
    fn load(
        store: &mut WeightStore,
        prefix: &str,
        shape: [usize; 4],
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            weight: store.tensor(&format!("{prefix}.weight"), shape, device)?,
            bias: store.tensor(&format!("{prefix}.bias"), [shape[0]], device)?,
            padding: shape[2] / 2,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let options = ConvOptions::new([1, 1], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.weight.clone(), Some(self.bias.clone()), options)
    }
}

/// Raw RPN outputs for one image.
pub struct RpnOutputs<B: Backend> {
    /// Objectness logits `[1, A, H, W]`.
    pub objectness_logits: Tensor<B, 4>,
    /// Anchor deltas `[1, A * 4, H, W]` (`dx, dy, dw, dh` per anchor).
    pub anchor_deltas: Tensor<B, 4>,
}

/// Proposals of one image in network-input pixels, best objectness first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proposals {
    /// `[x1, y1, x2, y2]` per proposal.
    pub boxes: Vec<[f32; 4]>,
    /// Objectness logit per proposal.
    pub logits: Vec<f32>,
}

/// Anchor sizes, ratios and proposal filtering of the RPN.
pub struct Rpn<B: Backend> {
    conv: Conv<B>,
    objectness_logits: Conv<B>,
    anchor_deltas: Conv<B>,
    cell_anchors: Vec<[f32; 4]>,
    pre_nms_topk: usize,
    post_nms_topk: usize,
    nms_threshold: f32,
    min_box_size: f32,
}

/// Anchors centred at the origin, sizes outer and aspect ratios (`h / w`) inner, as
/// `DefaultAnchorGenerator.generate_cell_anchors`: `w = sqrt(size² / ratio)`, `h = ratio * w`.
pub fn cell_anchors(sizes: &[f32], aspect_ratios: &[f32]) -> Vec<[f32; 4]> {
    let mut anchors = Vec::with_capacity(sizes.len() * aspect_ratios.len());
    for &size in sizes {
        let area = f64::from(size) * f64::from(size);
        for &ratio in aspect_ratios {
            let w = (area / f64::from(ratio)).sqrt();
            let h = f64::from(ratio) * w;
            anchors.push([
                (-w / 2.0) as f32,
                (-h / 2.0) as f32,
                (w / 2.0) as f32,
                (h / 2.0) as f32,
            ]);
        }
    }
    anchors
}

impl<B: Backend> Rpn<B> {
    /// Loads `proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}`.
    ///
    /// The stored buffer `proposal_generator.anchor_generator.cell_anchors.0`, which a full
    /// detectron2 `state_dict` contains, is optional and, if present, must equal the anchors the
    /// configuration generates.
    pub fn load(
        store: &mut WeightStore,
        config: &ButdConfig,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let in_channels = config.res4_channels();
        let hidden = config.rpn_hidden_channels;
        let cell_anchors = cell_anchors(&config.anchor_sizes, &config.anchor_aspect_ratios);
        let a = cell_anchors.len();
        let key = "proposal_generator.anchor_generator.cell_anchors.0";
        if let Some(stored) = store.take_optional(key, &[a, 4])? {
            let generated = cell_anchors.iter().flatten();
            if stored
                .iter()
                .zip(generated)
                .any(|(s, g)| (s - g).abs() > 1e-3 * g.abs().max(1.0))
            {
                return Err(store.invalid(
                    key,
                    format!(
                        "stored anchors {stored:?} differ from the configured {cell_anchors:?}"
                    ),
                ));
            }
        }
        Ok(Self {
            conv: Conv::load(
                store,
                "proposal_generator.rpn_head.conv",
                [hidden, in_channels, 3, 3],
                device,
            )?,
            objectness_logits: Conv::load(
                store,
                "proposal_generator.rpn_head.objectness_logits",
                [a, hidden, 1, 1],
                device,
            )?,
            anchor_deltas: Conv::load(
                store,
                "proposal_generator.rpn_head.anchor_deltas",
                [a * 4, hidden, 1, 1],
                device,
            )?,
            cell_anchors,
            pre_nms_topk: config.rpn_pre_nms_topk,
            post_nms_topk: config.rpn_post_nms_topk,
            nms_threshold: config.rpn_nms_threshold,
            min_box_size: config.rpn_min_box_size,
        })
    }

    /// The head: `relu(conv3x3(res4))` then the two 1x1 convs.
    pub fn forward(&self, res4: Tensor<B, 4>) -> RpnOutputs<B> {
        let t = relu(self.conv.forward(res4));
        RpnOutputs {
            objectness_logits: self.objectness_logits.forward(t.clone()),
            anchor_deltas: self.anchor_deltas.forward(t),
        }
    }

    /// Proposals for an input of `height x width` pixels (`find_top_rpn_proposals` at test
    /// time): the `pre_nms_topk` best anchors by logit, decoded, clipped to the image, boxes with
    /// a side `<= min_box_size` dropped (`Boxes.nonempty`), NMS, then the `post_nms_topk` best.
    pub fn proposals(&self, outputs: &RpnOutputs<B>, height: usize, width: usize) -> Proposals {
        let [_, a, fh, fw] = outputs.objectness_logits.dims();
        let logits: Vec<f32> = outputs
            .objectness_logits
            .to_data()
            .to_vec()
            .expect("f32 logits");
        let deltas: Vec<f32> = outputs
            .anchor_deltas
            .to_data()
            .to_vec()
            .expect("f32 deltas");
        let plane = fh * fw;
        // detectron2 order of anchors: (y, x, anchor); the logits come as (anchor, y, x).
        let mut order: Vec<usize> = (0..plane * a).collect();
        let logit_of = |i: usize| {
            let (cell, k) = (i / a, i % a);
            logits[k * plane + cell]
        };
        order.sort_by(|&i, &j| logit_of(j).total_cmp(&logit_of(i)).then(i.cmp(&j)));
        order.truncate(self.pre_nms_topk);

        let coder = BoxCoder::new(RPN_BOX_WEIGHTS);
        let stride = FEATURE_STRIDE as f32;
        let mut boxes = Vec::with_capacity(order.len());
        let mut scores = Vec::with_capacity(order.len());
        for &i in &order {
            let (cell, k) = (i / a, i % a);
            let (y, x) = (cell / fw, cell % fw);
            let (sx, sy) = (x as f32 * stride, y as f32 * stride);
            let base = self.cell_anchors[k];
            let anchor = [base[0] + sx, base[1] + sy, base[2] + sx, base[3] + sy];
            let d = |j: usize| deltas[(k * 4 + j) * plane + cell];
            let mut b = coder.decode(&anchor, &[d(0), d(1), d(2), d(3)]);
            clip_box(&mut b, width as f32, height as f32);
            if b[2] - b[0] > self.min_box_size && b[3] - b[1] > self.min_box_size {
                boxes.push(b);
                scores.push(logit_of(i));
            }
        }
        let mut keep = nms(&boxes, &scores, self.nms_threshold);
        keep.truncate(self.post_nms_topk);
        Proposals {
            boxes: keep.iter().map(|&i| boxes[i]).collect(),
            logits: keep.iter().map(|&i| scores[i]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_anchors_follow_detectron2_order_and_area() {
        let anchors = cell_anchors(&[64.0, 128.0], &[0.5, 1.0, 2.0]);
        assert_eq!(anchors.len(), 6);
        // size 64, ratio 1 is the square [-32, -32, 32, 32].
        assert_eq!(anchors[1], [-32.0, -32.0, 32.0, 32.0]);
        for (i, a) in anchors.iter().enumerate() {
            let size = if i < 3 { 64.0 } else { 128.0 };
            let ratio = [0.5, 1.0, 2.0][i % 3];
            let (w, h) = (a[2] - a[0], a[3] - a[1]);
            assert!((w * h - size * size).abs() < 1e-2 * size * size, "{a:?}");
            assert!((h / w - ratio).abs() < 1e-4, "{a:?}");
        }
    }
}
