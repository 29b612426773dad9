//! Greedy non-maximum suppression with `torchvision.ops.nms` / `batched_nms` semantics.
//!
//! Boxes are visited by descending score; equal scores keep the lower input index first, and
//! NaN scores sort first like in `torch.sort`. (torchvision gives the same tie order for up to
//! 16 boxes; beyond that torch's CPU sort is not stable and its tie order is unspecified.)
//! A box is suppressed when its IoU with an already kept box is strictly greater than the
//! threshold. IoU is computed in `f32` exactly like torchvision's CPU kernel
//! (`inter / (area_i + area_j - inter)`, so degenerate boxes never suppress anything).
//!
//! One difference: torchvision compares the `f32` IoU against a `f64` threshold, this module
//! against the `f32` one. They disagree only when an IoU equals the threshold rounded to `f32`
//! and that rounding went up (e.g. IoU exactly `0.3_f32` with threshold `0.3`).

use std::cmp::Ordering;

use super::boxes::{box_area, intersection};

/// Indices of the boxes kept by NMS, by descending score (`torchvision.ops.nms`).
///
/// # Panics
/// If `boxes` and `scores` differ in length.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    assert_eq!(
        boxes.len(),
        scores.len(),
        "nms: boxes and scores differ in length"
    );
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    sort_by_score(&mut order, scores);
    suppress(boxes, &order, iou_threshold)
}

/// Per-class NMS (`torchvision.ops.batched_nms`): boxes of different classes never suppress
/// each other. Returns kept indices by descending score (ties: lower index first).
///
/// Runs NMS on each class separately, so unlike torchvision's coordinate-offset trick it needs
/// no assumption about the coordinate range.
///
/// # Panics
/// If `boxes`, `scores` and `classes` differ in length.
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[u32],
    iou_threshold: f32,
) -> Vec<usize> {
    assert_eq!(
        boxes.len(),
        scores.len(),
        "batched_nms: boxes and scores differ in length"
    );
    assert_eq!(
        boxes.len(),
        classes.len(),
        "batched_nms: boxes and classes differ in length"
    );
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    sort_by_score(&mut order, scores);
    // Stable sort: each class's run stays in score order.
    order.sort_by_key(|&i| classes[i]);
    let mut keep: Vec<usize> = order
        .chunk_by(|&a, &b| classes[a] == classes[b])
        .flat_map(|run| suppress(boxes, run, iou_threshold))
        .collect();
    sort_by_score(&mut keep, scores);
    keep
}

/// Sorts indices by descending score, NaN first, ties by ascending index.
fn sort_by_score(indices: &mut [usize], scores: &[f32]) {
    indices.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        let by_score = match (sa.is_nan(), sb.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => sb.partial_cmp(&sa).unwrap_or(Ordering::Equal),
        };
        by_score.then(a.cmp(&b))
    });
}

/// Greedy suppression over `order` (already sorted by score); returns the kept indices.
fn suppress(boxes: &[[f32; 4]], order: &[usize], iou_threshold: f32) -> Vec<usize> {
    let areas: Vec<f32> = order.iter().map(|&i| box_area(&boxes[i])).collect();
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for a in 0..order.len() {
        if suppressed[a] {
            continue;
        }
        let i = order[a];
        keep.push(i);
        for b in a + 1..order.len() {
            if suppressed[b] {
                continue;
            }
            let inter = intersection(&boxes[i], &boxes[order[b]]);
            // NaN (0 / 0 for degenerate boxes) compares false and never suppresses.
            if inter / (areas[a] + areas[b] - inter) > iou_threshold {
                suppressed[b] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_overlaps_by_score() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],   // IoU with 0: 81/119 = 0.68
            [20.0, 20.0, 30.0, 30.0], // disjoint
            [0.0, 0.0, 10.0, 9.0],    // IoU with 0: 0.9
        ];
        let scores = [0.5, 0.9, 0.3, 0.8];
        // 1 kept, suppresses 0 (0.68) but not 3 (IoU(1, 3) = 72/118 = 0.61); 3 kept; 2 kept.
        assert_eq!(nms(&boxes, &scores, 0.65), vec![1, 3, 2]);
        assert_eq!(nms(&boxes, &scores, 0.5), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.95), vec![1, 3, 0, 2]);
    }

    #[test]
    fn threshold_is_strict_and_ties_keep_lower_index() {
        // IoU exactly 0.5.
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 2.0, 1.0],
        ];
        let scores = [0.7, 0.7, 0.7];
        assert_eq!(nms(&boxes, &scores, 0.5), vec![0, 1]);
        assert_eq!(nms(&boxes, &scores, 0.49), vec![0]);
    }

    #[test]
    fn degenerate_boxes_are_kept() {
        let boxes = [
            [1.0, 1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0, 1.0],
            [3.0, 3.0, 2.0, 2.0],
        ];
        assert_eq!(nms(&boxes, &[0.1, 0.2, 0.3], 0.0), vec![2, 1, 0]);
        assert!(nms(&[], &[], 0.5).is_empty());
    }

    #[test]
    fn nan_scores_come_first() {
        let boxes = [[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]];
        assert_eq!(nms(&boxes, &[0.1, f32::NAN], 0.5), vec![1, 0]);
    }

    #[test]
    fn batched_is_per_class_and_sorted() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.5, 0.0, 10.0, 10.0],
        ];
        let scores = [0.2, 0.9, 0.5, 0.95];
        let classes = [7, 3, 7, 3];
        // class 3: 3 beats 1; class 7: 2 beats 0.
        assert_eq!(batched_nms(&boxes, &scores, &classes, 0.5), vec![3, 2]);
        assert_eq!(
            batched_nms(&boxes, &scores, &[1, 2, 3, 4], 0.5),
            vec![3, 1, 2, 0]
        );
    }
}
