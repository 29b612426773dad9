//! Which regions an image keeps: the rule of bottom-up-attention's feature extraction
//! (peteanderson80/bottom-up-attention `tools/generate_tsv.py`, `get_detections_from_im`).
//!
//! For every foreground class, NMS at `cfg.TEST.NMS` (0.3, `lib/fast_rcnn/config.py`) over the
//! proposal boxes scored by that class's probability; a box's confidence is the highest
//! probability it keeps over the classes in which it survives. Boxes with confidence
//! `>= conf_thresh` (0.2) are kept in proposal order; if fewer than `MIN_BOXES` (10) pass, the
//! `MIN_BOXES` most confident are kept instead, if more than `MAX_BOXES` (100), the `MAX_BOXES`
//! most confident.

use crate::ops::boxes::iou;

/// The regions kept for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Indices into the proposals.
    pub indices: Vec<usize>,
    /// Foreground class (0-based) that gave each region its confidence. A region that survives
    /// NMS in no class (confidence 0, only reachable through the `min_boxes` fill-up) gets its
    /// most probable foreground class.
    pub class_ids: Vec<usize>,
    /// Confidence of each region (its best surviving class probability).
    pub scores: Vec<f32>,
}

/// Thresholds of the selection rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectionRule {
    /// Per-class NMS IoU threshold (`cfg.TEST.NMS`).
    pub nms_threshold: f32,
    /// Minimum confidence (`conf_thresh`).
    pub conf_threshold: f32,
    /// Fewest regions (`MIN_BOXES`).
    pub min_boxes: usize,
    /// Most regions (`MAX_BOXES`).
    pub max_boxes: usize,
}

/// Applies `rule` to `boxes` with class probabilities `probs` (`[boxes.len(), num_classes + 1]`
/// row-major, background last).
pub fn select_regions(
    boxes: &[[f32; 4]],
    probs: &[f32],
    num_classes: usize,
    rule: &SelectionRule,
) -> Selection {
    let r = boxes.len();
    let stride = num_classes + 1;
    assert_eq!(probs.len(), r * stride, "probabilities per box");
    // One IoU matrix serves the NMS of every class.
    let mut overlaps = vec![0.0f32; r * r];
    for i in 0..r {
        for j in i + 1..r {
            let v = iou(&boxes[i], &boxes[j]);
            overlaps[i * r + j] = v;
            overlaps[j * r + i] = v;
        }
    }
    let mut max_conf = vec![0.0f32; r];
    let mut best_class: Vec<Option<usize>> = vec![None; r];
    let mut order: Vec<usize> = (0..r).collect();
    let mut suppressed = vec![false; r];
    for class in 0..num_classes {
        let score = |i: usize| probs[i * stride + class];
        order.sort_by(|&i, &j| score(j).total_cmp(&score(i)).then(i.cmp(&j)));
        suppressed.fill(false);
        for (rank, &i) in order.iter().enumerate() {
            if suppressed[i] {
                continue;
            }
            if score(i) > max_conf[i] {
                max_conf[i] = score(i);
                best_class[i] = Some(class);
            }
            for &j in &order[rank + 1..] {
                if overlaps[i * r + j] > rule.nms_threshold {
                    suppressed[j] = true;
                }
            }
        }
    }
    let mut indices: Vec<usize> = (0..r)
        .filter(|&i| max_conf[i] >= rule.conf_threshold)
        .collect();
    if indices.len() < rule.min_boxes || indices.len() > rule.max_boxes {
        let limit = if indices.len() < rule.min_boxes {
            rule.min_boxes
        } else {
            rule.max_boxes
        };
        indices = (0..r).collect();
        indices.sort_by(|&i, &j| max_conf[j].total_cmp(&max_conf[i]).then(i.cmp(&j)));
        indices.truncate(limit);
    }
    let class_ids = indices
        .iter()
        .map(|&i| {
            best_class[i].unwrap_or_else(|| {
                let row = &probs[i * stride..i * stride + num_classes];
                (0..num_classes)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                    .expect("at least one class")
            })
        })
        .collect();
    let scores = indices.iter().map(|&i| max_conf[i]).collect();
    Selection {
        indices,
        class_ids,
        scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: SelectionRule = SelectionRule {
        nms_threshold: 0.3,
        conf_threshold: 0.2,
        min_boxes: 2,
        max_boxes: 3,
    };

    #[test]
    fn overlapping_boxes_keep_the_best_per_class() {
        // Boxes 0 and 1 overlap (IoU 0.9); box 2 is apart. Two classes + background.
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 9.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        let probs = [
            0.6, 0.3, 0.1, // box 0 wins class 0 and suppresses box 1 there
            0.5, 0.4, 0.1, // box 1 wins class 1 and suppresses box 0 there
            0.1, 0.1, 0.8, // box 2 is mostly background
        ];
        let s = select_regions(&boxes, &probs, 2, &RULE);
        // Box 0 keeps 0.6 (class 0); box 1 survives only in class 1 (0.4); box 2 has 0.1 < 0.2,
        // so two pass, which meets min_boxes: proposal order.
        assert_eq!(s.indices, vec![0, 1]);
        assert_eq!(s.class_ids, vec![0, 1]);
        assert_eq!(s.scores, vec![0.6, 0.4]);
    }

    #[test]
    fn too_few_confident_boxes_are_filled_up_by_confidence() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [20.0, 0.0, 30.0, 10.0],
            [40.0, 0.0, 50.0, 10.0],
        ];
        let probs = [
            0.1, 0.05, 0.85, //
            0.5, 0.1, 0.4, //
            0.15, 0.1, 0.75,
        ];
        let s = select_regions(&boxes, &probs, 2, &RULE);
        assert_eq!(s.indices, vec![1, 2]);
        assert_eq!(s.class_ids, vec![0, 0]);
        assert_eq!(s.scores, vec![0.5, 0.15]);
    }

    #[test]
    fn too_many_confident_boxes_are_cut_by_confidence() {
        let boxes: Vec<[f32; 4]> = (0..5)
            .map(|i| [i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0])
            .collect();
        let probs: Vec<f32> = [0.3, 0.9, 0.5, 0.7, 0.4]
            .iter()
            .flat_map(|&p| [0.0, p, 1.0 - p])
            .collect();
        let s = select_regions(&boxes, &probs, 2, &RULE);
        assert_eq!(s.indices, vec![1, 3, 2]);
        assert_eq!(s.class_ids, vec![1, 1, 1]);
    }
}
