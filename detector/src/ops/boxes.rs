//! Axis-aligned box helpers following `torchvision.ops` and detectron2's `Box2BoxTransform`.
//!
//! Boxes are `[x1, y1, x2, y2]` in pixels. Widths are `x2 - x1` (no `+1`), as in torchvision and
//! detectron2. All arithmetic is `f32` and done in the same order as the torch code, so results
//! match torchvision's CPU kernels up to the last bit except where `exp`/`ln` round differently.

/// Faster R-CNN box coder with detectron2 `Box2BoxTransform` / torchvision `BoxCoder` semantics.
///
/// Widths are `x2 - x1`, centres `x1 + 0.5 * width`; deltas are divided by `weights`
/// (`wx, wy, ww, wh`) and `dw`/`dh` are clamped at `scale_clamp` before `exp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxCoder {
    /// Delta weights `(wx, wy, ww, wh)`, e.g. `(10, 10, 5, 5)` for the Fast R-CNN head.
    pub weights: [f32; 4],
    /// Upper clamp on `dw`/`dh` after dividing by the weights; `ln(1000/16)` by default.
    pub scale_clamp: f32,
}

impl BoxCoder {
    /// Coder with the given weights and the default `scale_clamp = ln(1000 / 16)`.
    pub fn new(weights: [f32; 4]) -> Self {
        Self {
            weights,
            scale_clamp: (1000.0_f32 / 16.0).ln(),
        }
    }

    /// Applies `deltas` `(dx, dy, dw, dh)` to `reference` and returns the predicted box.
    pub fn decode(&self, reference: &[f32; 4], deltas: &[f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let width = reference[2] - reference[0];
        let height = reference[3] - reference[1];
        let ctr_x = reference[0] + 0.5 * width;
        let ctr_y = reference[1] + 0.5 * height;

        let dx = deltas[0] / wx;
        let dy = deltas[1] / wy;
        let dw = clamp_max(deltas[2] / ww, self.scale_clamp);
        let dh = clamp_max(deltas[3] / wh, self.scale_clamp);

        let pred_ctr_x = dx * width + ctr_x;
        let pred_ctr_y = dy * height + ctr_y;
        let half_w = 0.5 * (dw.exp() * width);
        let half_h = 0.5 * (dh.exp() * height);
        [
            pred_ctr_x - half_w,
            pred_ctr_y - half_h,
            pred_ctr_x + half_w,
            pred_ctr_y + half_h,
        ]
    }

    /// Deltas that [`decode`](Self::decode) maps from `reference` to `target` (inverse transform,
    /// detectron2 `get_deltas` / torchvision `encode_boxes`).
    pub fn encode(&self, reference: &[f32; 4], target: &[f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let ref_w = reference[2] - reference[0];
        let ref_h = reference[3] - reference[1];
        let ref_ctr_x = reference[0] + 0.5 * ref_w;
        let ref_ctr_y = reference[1] + 0.5 * ref_h;
        let tgt_w = target[2] - target[0];
        let tgt_h = target[3] - target[1];
        let tgt_ctr_x = target[0] + 0.5 * tgt_w;
        let tgt_ctr_y = target[1] + 0.5 * tgt_h;
        [
            wx * (tgt_ctr_x - ref_ctr_x) / ref_w,
            wy * (tgt_ctr_y - ref_ctr_y) / ref_h,
            ww * (tgt_w / ref_w).ln(),
            wh * (tgt_h / ref_h).ln(),
        ]
    }
}

/// `torch.clamp(v, max=hi)`: NaN stays NaN (unlike `f32::min`).
fn clamp_max(v: f32, hi: f32) -> f32 {
    if v > hi { hi } else { v }
}

/// `torch.clamp(v, min=lo, max=hi)`: min applied first, so `hi` wins when `lo > hi`; NaN stays NaN.
fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    clamp_max(v, hi)
}

/// Clips a box to the image in place (torchvision `clip_boxes_to_image`): x to `[0, width]`,
/// y to `[0, height]`.
pub fn clip_box(b: &mut [f32; 4], width: f32, height: f32) {
    b[0] = clamp(b[0], 0.0, width);
    b[1] = clamp(b[1], 0.0, height);
    b[2] = clamp(b[2], 0.0, width);
    b[3] = clamp(b[3], 0.0, height);
}

/// `(x2 - x1) * (y2 - y1)`, unclamped like torchvision `box_area` (negative for inverted boxes).
pub fn box_area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Intersection area of two boxes, each side clamped at 0 (the `inter` of torchvision `box_iou`).
pub fn intersection(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

/// Intersection over union with torchvision `box_iou` semantics
/// (`inter / (area_a + area_b - inter)`), except that a zero union gives 0 instead of NaN.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let inter = intersection(a, b);
    let union = box_area(a) + box_area(b) - inter;
    if union == 0.0 { 0.0 } else { inter / union }
}

/// Indices (ascending) of boxes whose width and height are both `>= min_size`
/// (torchvision `remove_small_boxes`).
pub fn remove_small(boxes: &[[f32; 4]], min_size: f32) -> Vec<usize> {
    boxes
        .iter()
        .enumerate()
        .filter(|(_, b)| b[2] - b[0] >= min_size && b[3] - b[1] >= min_size)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_zero_deltas_is_identity() {
        let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
        let b = [10.0, 20.0, 50.0, 100.0];
        assert_eq!(coder.decode(&b, &[0.0; 4]), b);
    }

    #[test]
    fn decode_hand_computed() {
        // w = 40, h = 80, centre (30, 60); dx = 1/10, dy = -2/10, dw = ln(2), dh = 0.
        let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
        let d = [1.0, -2.0, 5.0 * 2.0_f32.ln(), 0.0];
        let out = coder.decode(&[10.0, 20.0, 50.0, 100.0], &d);
        // centre (34, 44), size (80, 80)
        let want = [-6.0, 4.0, 74.0, 84.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-4, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn decode_clamps_scale() {
        let coder = BoxCoder::new([1.0; 4]);
        let out = coder.decode(&[0.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 100.0, 100.0]);
        let max_side = 1000.0 / 16.0;
        assert!(((out[2] - out[0]) - max_side).abs() < 1e-3, "{out:?}");
        assert!(((out[3] - out[1]) - max_side).abs() < 1e-3, "{out:?}");
    }

    #[test]
    fn encode_inverts_decode() {
        let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
        let reference = [3.0, 7.5, 40.0, 33.0];
        let target = [5.0, 2.0, 61.0, 30.0];
        let back = coder.decode(&reference, &coder.encode(&reference, &target));
        for (b, t) in back.iter().zip(target) {
            assert!((b - t).abs() < 1e-4, "{back:?} vs {target:?}");
        }
    }

    #[test]
    fn clip_to_image() {
        let mut b = [-5.0, 3.0, 120.0, 90.0];
        clip_box(&mut b, 100.0, 80.0);
        assert_eq!(b, [0.0, 3.0, 100.0, 80.0]);
    }

    #[test]
    fn area_and_iou() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert_eq!(box_area(&a), 4.0);
        assert_eq!(intersection(&a, &b), 1.0);
        assert_eq!(iou(&a, &b), 1.0 / 7.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0);
        assert_eq!(box_area(&[2.0, 0.0, 0.0, 1.0]), -2.0);
        // Degenerate: zero union is 0, not NaN.
        let p = [1.0, 1.0, 1.0, 1.0];
        assert_eq!(iou(&p, &p), 0.0);
    }

    #[test]
    fn remove_small_keeps_boundary() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 0.5, 4.0],
            [0.0, 0.0, 4.0, 0.99],
            [2.0, 2.0, 5.0, 5.0],
        ];
        assert_eq!(remove_small(&boxes, 1.0), vec![0, 3]);
    }
}
