//! Checks the box ops against torchvision outputs recorded by `tools/torchvision_goldens.py`.

use std::sync::OnceLock;

use anyhow::Context;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use detector::ops::boxes::{BoxCoder, clip_box, iou, remove_small};
use detector::ops::nms::{batched_nms, nms};
use detector::ops::roi_align::{Roi, RoiAlignConfig, roi_align};
use serde::Deserialize;

type B = NdArray<f32>;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/torchvision_ops.json"
);

#[derive(Deserialize)]
struct Golden {
    meta: Meta,
    box_iou: Vec<IouCase>,
    clip_boxes_to_image: Vec<ClipCase>,
    remove_small_boxes: Vec<RemoveSmallCase>,
    box_coder: Vec<CoderCase>,
    nms: Vec<NmsCase>,
    batched_nms: Vec<BatchedNmsCase>,
    roi_align: Vec<RoiAlignCase>,
}

#[derive(Deserialize)]
struct Meta {
    torch: String,
    torchvision: String,
    scale_clamp: f64,
}

#[derive(Deserialize)]
struct IouCase {
    boxes1: Vec<[f32; 4]>,
    boxes2: Vec<[f32; 4]>,
    iou: Vec<f32>,
}

#[derive(Deserialize)]
struct ClipCase {
    height: f32,
    width: f32,
    boxes: Vec<[f32; 4]>,
    clipped: Vec<[f32; 4]>,
}

#[derive(Deserialize)]
struct RemoveSmallCase {
    boxes: Vec<[f32; 4]>,
    min_size: f32,
    keep: Vec<usize>,
}

#[derive(Deserialize)]
struct CoderCase {
    weights: [f32; 4],
    reference: Vec<[f32; 4]>,
    deltas: Vec<[f32; 4]>,
    decoded: Vec<[f32; 4]>,
    targets: Vec<[f32; 4]>,
    encoded: Vec<[f32; 4]>,
}

#[derive(Deserialize)]
struct NmsCase {
    name: String,
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    iou_threshold: f32,
    keep: Vec<usize>,
}

#[derive(Deserialize)]
struct BatchedNmsCase {
    name: String,
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    classes: Vec<u32>,
    iou_threshold: f32,
    keep: Vec<usize>,
}

#[derive(Deserialize)]
struct RoiAlignCase {
    name: String,
    shape: [usize; 4],
    features: Vec<f32>,
    /// `[batch_index, x1, y1, x2, y2]`; the index is written as an integer.
    rois: Vec<(usize, f32, f32, f32, f32)>,
    output_height: usize,
    output_width: usize,
    spatial_scale: f32,
    sampling_ratio: usize,
    aligned: bool,
    output: Vec<f32>,
}

fn golden() -> &'static Golden {
    static GOLDEN_DATA: OnceLock<Golden> = OnceLock::new();
    GOLDEN_DATA.get_or_init(|| {
        let load = || -> anyhow::Result<Golden> {
            let text =
                std::fs::read_to_string(GOLDEN).with_context(|| format!("reading {GOLDEN}"))?;
            serde_json::from_str(&text).context("parsing the torchvision goldens")
        };
        let golden = load().unwrap();
        eprintln!(
            "goldens from torch {} / torchvision {}",
            golden.meta.torch, golden.meta.torchvision
        );
        golden
    })
}

/// `|got - want| <= rel * max(|want|, 1)` for every coordinate.
fn assert_boxes_close(got: &[f32; 4], want: &[f32; 4], rel: f32, what: &str) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= rel * w.abs().max(1.0),
            "{what}: {got:?} vs torchvision {want:?}"
        );
    }
}

#[test]
fn default_scale_clamp_matches() {
    let clamp = golden().meta.scale_clamp as f32;
    assert_eq!(BoxCoder::new([1.0; 4]).scale_clamp, clamp);
}

#[test]
fn box_iou_matches() {
    let cases = &golden().box_iou;
    assert!(!cases.is_empty());
    for case in cases {
        assert_eq!(case.iou.len(), case.boxes1.len() * case.boxes2.len());
        let mut want = case.iou.iter();
        for a in &case.boxes1 {
            for b in &case.boxes2 {
                let (got, want) = (iou(a, b), *want.next().unwrap());
                assert!(
                    (got - want).abs() <= 1e-6,
                    "iou({a:?}, {b:?}) = {got}, torchvision {want}"
                );
            }
        }
    }
}

#[test]
fn clip_matches() {
    let cases = &golden().clip_boxes_to_image;
    assert!(!cases.is_empty());
    for case in cases {
        for (b, want) in case.boxes.iter().zip(&case.clipped) {
            let mut got = *b;
            clip_box(&mut got, case.width, case.height);
            assert_eq!(&got, want, "clip {b:?} to {}x{}", case.width, case.height);
        }
    }
}

#[test]
fn remove_small_matches() {
    let cases = &golden().remove_small_boxes;
    assert!(!cases.is_empty());
    for case in cases {
        assert_eq!(
            remove_small(&case.boxes, case.min_size),
            case.keep,
            "min_size {}",
            case.min_size
        );
    }
}

#[test]
fn box_coder_matches() {
    let cases = &golden().box_coder;
    assert!(!cases.is_empty());
    for case in cases {
        let coder = BoxCoder::new(case.weights);
        for ((reference, deltas), want) in
            case.reference.iter().zip(&case.deltas).zip(&case.decoded)
        {
            let got = coder.decode(reference, deltas);
            assert_boxes_close(
                &got,
                want,
                1e-4,
                &format!("decode {reference:?} by {deltas:?}"),
            );
        }
        for ((reference, target), want) in
            case.reference.iter().zip(&case.targets).zip(&case.encoded)
        {
            let got = coder.encode(reference, target);
            assert_boxes_close(
                &got,
                want,
                1e-4,
                &format!("encode {target:?} on {reference:?}"),
            );
        }
    }
}

#[test]
fn nms_matches() {
    let cases = &golden().nms;
    assert!(!cases.is_empty());
    for case in cases {
        let got = nms(&case.boxes, &case.scores, case.iou_threshold);
        assert_eq!(
            got, case.keep,
            "nms case {} at {}",
            case.name, case.iou_threshold
        );
    }
}

#[test]
fn batched_nms_matches() {
    let cases = &golden().batched_nms;
    assert!(!cases.is_empty());
    for case in cases {
        let got = batched_nms(&case.boxes, &case.scores, &case.classes, case.iou_threshold);
        assert_eq!(
            got, case.keep,
            "batched_nms case {} at {}",
            case.name, case.iou_threshold
        );
    }
}

#[test]
fn roi_align_matches() {
    let cases = &golden().roi_align;
    assert!(!cases.is_empty());
    let device = Default::default();
    for case in cases {
        let features =
            Tensor::<B, 4>::from_data(TensorData::new(case.features.clone(), case.shape), &device);
        let rois: Vec<Roi> = case
            .rois
            .iter()
            .map(|&(batch_index, x1, y1, x2, y2)| Roi {
                batch_index,
                x1,
                y1,
                x2,
                y2,
            })
            .collect();
        let config = RoiAlignConfig {
            output_height: case.output_height,
            output_width: case.output_width,
            spatial_scale: case.spatial_scale,
            sampling_ratio: case.sampling_ratio,
            aligned: case.aligned,
        };
        let out = roi_align(features, &rois, &config);
        assert_eq!(
            out.dims(),
            [
                rois.len(),
                case.shape[1],
                case.output_height,
                case.output_width
            ],
            "{}",
            case.name
        );
        let got: Vec<f32> = out.into_data().to_vec().unwrap();
        assert_eq!(got.len(), case.output.len(), "{}", case.name);
        let per_roi = case.shape[1] * case.output_height * case.output_width;
        for (i, (g, w)) in got.iter().zip(&case.output).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5,
                "{}: roi {:?} channel/bin {}: got {g}, torchvision {w}",
                case.name,
                rois[i / per_roi],
                i % per_roi
            );
        }
    }
}
