//! The Burn BUTD detector against the PyTorch reference (`tools/butd_reference.py`) on a tiny
//! random model of the real structure and two small real photos: every stage (resize, input,
//! stem, res2–res4, RPN outputs, proposals, RoI pooling, features, class/box/attribute logits)
//! within 1e-4 relative, and the same selected regions, classes and attributes.
//!
//! Also checks the checkpoint conversion (`tools/butd_to_safetensors.py`, run by `BUTD_PYTHON`,
//! else `python3`, which needs numpy) and the loader's errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use burn::backend::NdArray;
use burn::tensor::Tensor;
use detector::butd::weights::WeightError;
use detector::butd::{ButdConfig, ButdDetector, ButdError, ButdImage, ButdRegions, WeightStore};
use detector::ops::boxes::iou;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

type B = NdArray;

/// Relative tolerance of every tensor comparison.
const RTOL: f32 = 1e-4;

#[derive(Deserialize)]
struct Golden {
    config: ButdConfig,
    images: Vec<GoldenImage>,
}

#[derive(Deserialize)]
struct GoldenImage {
    name: String,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    resized: GoldenResized,
    tensors: HashMap<String, GoldenTensor>,
    proposals: GoldenProposals,
    detections: GoldenDetections,
}

#[derive(Deserialize)]
struct GoldenResized {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

#[derive(Deserialize)]
struct GoldenTensor {
    shape: Vec<usize>,
    mean: f64,
    abs_mean: f64,
    min: f32,
    max: f32,
    stride: usize,
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct GoldenProposals {
    boxes: Vec<f32>,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct GoldenDetections {
    indices: Vec<usize>,
    boxes: Vec<f32>,
    refined_boxes: Vec<f32>,
    class_ids: Vec<u32>,
    class_scores: Vec<f32>,
    attribute_ids: Vec<u32>,
    attribute_scores: Vec<f32>,
    features: Vec<f32>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden() -> Result<Golden> {
    let path = golden_dir().join("butd_tiny.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn checkpoint() -> PathBuf {
    golden_dir().join("butd_tiny.safetensors")
}

/// `|got - want| <= RTOL * (|want| + scale)` for every listed value.
fn check_values(name: &str, got: &[f32], want: &[f32], scale: f32) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{name}: {} values, golden has {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        ensure!(
            (g - w).abs() <= RTOL * (w.abs() + scale),
            "{name}[{i}]: {g} vs golden {w} (scale {scale})"
        );
    }
    Ok(())
}

/// Shape, statistics and the strided subset of a tensor against its golden summary.
fn check_tensor<const D: usize>(
    name: &str,
    tensor: &Tensor<B, D>,
    golden: &GoldenTensor,
) -> Result<()> {
    ensure!(
        tensor.dims().to_vec() == golden.shape,
        "{name}: shape {:?} vs golden {:?}",
        tensor.dims(),
        golden.shape
    );
    let values: Vec<f32> = tensor.to_data().to_vec().expect("f32");
    let scale = golden.max.abs().max(golden.min.abs());
    let strided: Vec<f32> = values.iter().step_by(golden.stride).copied().collect();
    check_values(name, &strided, &golden.values, scale)?;
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let abs_mean = values.iter().map(|&v| f64::from(v).abs()).sum::<f64>() / n;
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let tol = f64::from(RTOL) * f64::from(scale);
    ensure!(
        (mean - golden.mean).abs() <= tol,
        "{name}: mean {mean} vs {}",
        golden.mean
    );
    ensure!(
        (abs_mean - golden.abs_mean).abs() <= tol,
        "{name}: mean |x| {abs_mean} vs {}",
        golden.abs_mean
    );
    check_values(
        &format!("{name} min/max"),
        &[min, max],
        &[golden.min, golden.max],
        scale,
    )
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn check_boxes(name: &str, got: &[[f32; 4]], want: &[f32], scale: f32) -> Result<()> {
    let flat: Vec<f32> = got.iter().flatten().copied().collect();
    check_values(name, &flat, want, scale)?;
    for (i, (g, w)) in got.iter().zip(want.chunks_exact(4)).enumerate() {
        let overlap = iou(g, &[w[0], w[1], w[2], w[3]]);
        ensure!(
            overlap >= 0.95,
            "{name}[{i}]: IoU {overlap} with golden {w:?}"
        );
    }
    Ok(())
}

/// Checks every stage of one image and returns its regions.
fn check_image(detector: &ButdDetector<B>, image: &GoldenImage) -> Result<ButdRegions> {
    let input = ButdImage::new(image.width, image.height, image.rgb.clone())?;
    let (regions, trace) = detector.detect_traced(&input);
    let name = &image.name;

    ensure!(
        (trace.resized.width(), trace.resized.height())
            == (image.resized.width, image.resized.height),
        "{name}: resized to {}x{}, golden {}x{}",
        trace.resized.width(),
        trace.resized.height(),
        image.resized.width,
        image.resized.height
    );
    // Pillow's fixed-point bilinear resampling is reproduced bit for bit.
    ensure!(
        trace.resized.rgb() == image.resized.rgb.as_slice(),
        "{name}: resized pixels differ"
    );

    let t = &image.tensors;
    let stages = [
        ("input", &trace.input),
        ("stem", &trace.backbone.stem),
        ("res2", &trace.backbone.res2),
        ("res3", &trace.backbone.res3),
        ("res4", &trace.backbone.res4),
        ("rpn_logits", &trace.rpn.objectness_logits),
        ("rpn_deltas", &trace.rpn.anchor_deltas),
    ];
    for (stage, tensor) in stages {
        check_tensor(&format!("{name} {stage}"), tensor, &t[stage])?;
    }

    let proposals = &trace.proposals;
    ensure!(
        proposals.boxes.len() * 4 == image.proposals.boxes.len(),
        "{name}: {} proposals, golden {}",
        proposals.boxes.len(),
        image.proposals.boxes.len() / 4
    );
    let scale = image.resized.width.max(image.resized.height) as f32;
    check_boxes(
        &format!("{name} proposals"),
        &proposals.boxes,
        &image.proposals.boxes,
        scale,
    )?;
    check_values(
        &format!("{name} proposal logits"),
        &proposals.logits,
        &image.proposals.logits,
        max_abs(&image.proposals.logits),
    )?;

    let roi = trace.roi.as_ref().context("no RoI outputs")?;
    check_tensor(&format!("{name} pooled"), &roi.pooled, &t["pooled"])?;
    let heads = [
        ("features", &roi.features),
        ("class_logits", &roi.class_logits),
        ("box_deltas", &roi.box_deltas),
        ("attribute_logits", &roi.attribute_logits),
    ];
    for (stage, tensor) in heads {
        check_tensor(&format!("{name} {stage}"), tensor, &t[stage])?;
    }

    let d = &image.detections;
    ensure!(
        trace.selection.indices == d.indices,
        "{name}: kept proposals {:?}, golden {:?}",
        trace.selection.indices,
        d.indices
    );
    ensure!(
        regions.class_ids == d.class_ids,
        "{name}: classes {:?} vs {:?}",
        regions.class_ids,
        d.class_ids
    );
    check_values(
        &format!("{name} class scores"),
        &regions.class_scores,
        &d.class_scores,
        1.0,
    )?;
    ensure!(
        regions.attribute_ids == d.attribute_ids,
        "{name}: attributes {:?} vs {:?}",
        regions.attribute_ids,
        d.attribute_ids
    );
    check_values(
        &format!("{name} attribute scores"),
        &regions.attribute_scores,
        &d.attribute_scores,
        1.0,
    )?;
    let original = image.width.max(image.height) as f32;
    check_boxes(&format!("{name} boxes"), &regions.boxes, &d.boxes, original)?;
    check_boxes(
        &format!("{name} refined boxes"),
        &regions.refined_boxes,
        &d.refined_boxes,
        original,
    )?;
    ensure!(regions.feature_dim == detector.config().feature_dim());
    check_values(
        &format!("{name} region features"),
        &regions.features,
        &d.features,
        max_abs(&d.features),
    )?;
    ensure!(
        regions.len() == d.indices.len()
            && (regions.image_width, regions.image_height) == (image.width, image.height)
    );
    Ok(regions)
}

#[test]
fn tiny_detector_matches_the_pytorch_reference() -> Result<()> {
    let golden = golden()?;
    ensure!(
        golden.config == ButdConfig::tiny(),
        "golden config differs from ButdConfig::tiny()"
    );
    let device = Default::default();
    let detector = ButdDetector::<B>::load(&checkpoint(), ButdConfig::tiny(), &device)?;
    ensure!(golden.images.len() == 2);
    let checked: Vec<ButdRegions> = golden
        .images
        .iter()
        .map(|image| check_image(&detector, image))
        .collect::<Result<_>>()?;
    // `detect` gives the same regions as the traced path, one result per image.
    let inputs: Vec<ButdImage> = golden
        .images
        .iter()
        .map(|im| ButdImage::new(im.width, im.height, im.rgb.clone()))
        .collect::<Result<_, _>>()?;
    ensure!(detector.detect(&inputs) == checked);
    Ok(())
}

/// The Python interpreter that runs the converter (`BUTD_PYTHON`, else `python3`); it needs
/// numpy (`.ci/run` installs it).
fn python_with_numpy() -> Result<String> {
    let python = std::env::var("BUTD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    ensure!(
        ok,
        "{python} cannot import numpy: install it (`python3 -m pip install numpy`) or point \
         BUTD_PYTHON at a Python that has it"
    );
    Ok(python)
}

#[test]
fn converter_reproduces_the_committed_checkpoint() -> Result<()> {
    let python = python_with_numpy()?;
    let out = std::env::temp_dir().join(format!("butd_tiny_{}.safetensors", std::process::id()));
    let status = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/butd_to_safetensors.py"))
        .arg(golden_dir().join("butd_tiny.pkl"))
        .arg(&out)
        .status()?;
    ensure!(status.success(), "converter failed: {status}");
    let converted = std::fs::read(&out)?;
    std::fs::remove_file(&out)?;
    ensure!(
        converted == std::fs::read(checkpoint())?,
        "tools/butd_to_safetensors.py output differs from tests/golden/butd_tiny.safetensors"
    );
    Ok(())
}

/// The committed checkpoint rewritten by `edit` (name, dtype, shape, bytes) → kept entries.
fn rewritten(edit: impl Fn(&str, Vec<usize>) -> Option<(String, Vec<usize>)>) -> Result<Vec<u8>> {
    let bytes = std::fs::read(checkpoint())?;
    let tensors = SafeTensors::deserialize(&bytes)?;
    let mut out = Vec::new();
    for (name, view) in tensors.iter() {
        if let Some((new_name, shape)) = edit(name, view.shape().to_vec()) {
            out.push((new_name, TensorView::new(Dtype::F32, shape, view.data())?));
        }
    }
    Ok(safetensors::serialize(out, None)?)
}

fn load_error(bytes: &[u8], config: ButdConfig) -> String {
    let store = WeightStore::from_bytes("edited.safetensors".to_owned(), bytes).expect("parses");
    match ButdDetector::<B>::from_store(store, config, &Default::default()) {
        Ok(_) => panic!("loaded an invalid checkpoint"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loader_names_missing_extra_and_misshaped_tensors() -> Result<()> {
    let key = "roi_heads.box_predictor.fc_attr.weight";
    let missing = rewritten(|n, s| (n != key).then(|| (n.to_owned(), s)))?;
    let message = load_error(&missing, ButdConfig::tiny());
    ensure!(
        message.contains(key) && message.contains("missing"),
        "{message}"
    );
    ensure!(message.contains("[32, 144]"), "{message}");

    let bytes = std::fs::read(checkpoint())?;
    let with_extra = {
        // Every tensor plus a copy of one under an unknown name.
        let tensors = SafeTensors::deserialize(&bytes)?;
        let mut all: Vec<(String, TensorView)> =
            tensors.iter().map(|(n, v)| (n.to_owned(), v)).collect();
        all.push((format!("{key}.copy"), tensors.tensor(key)?));
        safetensors::serialize(all, None)?
    };
    let message = load_error(&with_extra, ButdConfig::tiny());
    ensure!(
        message.contains(&format!("`{key}.copy`")) && message.contains("does not use"),
        "{message}"
    );

    let stem = "backbone.stem.conv1.weight";
    let misshaped = rewritten(|n, s| {
        let s = if n == stem {
            vec![s[1], s[0], s[2], s[3]]
        } else {
            s
        };
        Some((n.to_owned(), s))
    })?;
    let message = load_error(&misshaped, ButdConfig::tiny());
    ensure!(
        message.contains(stem)
            && message.contains("[3, 8, 7, 7]")
            && message.contains("[8, 3, 7, 7]"),
        "{message}"
    );

    // The real model's sizes on the tiny checkpoint: the first tensor already disagrees.
    let message = load_error(&bytes, ButdConfig::resnet101_vg());
    ensure!(
        message.contains(stem) && message.contains("[64, 3, 7, 7]"),
        "{message}"
    );
    Ok(())
}

#[test]
fn batch_norm_statistics_are_optional_only_as_a_pair() -> Result<()> {
    let prefix = "backbone.res2.0.conv2.norm";
    let without_both = rewritten(|n, s| {
        let dropped = n == format!("{prefix}.running_mean") || n == format!("{prefix}.running_var");
        (!dropped).then(|| (n.to_owned(), s))
    })?;
    let store = WeightStore::from_bytes("no-stats".to_owned(), &without_both)?;
    ButdDetector::<B>::from_store(store, ButdConfig::tiny(), &Default::default())?;

    let var = format!("{prefix}.running_var");
    let without_var = rewritten(|n, s| (n != var).then(|| (n.to_owned(), s)))?;
    let store = WeightStore::from_bytes("no-var".to_owned(), &without_var)?;
    match ButdDetector::<B>::from_store(store, ButdConfig::tiny(), &Default::default()) {
        Err(ButdError::Weights(WeightError::Missing { key, .. })) => ensure!(key == var, "{key}"),
        Err(other) => anyhow::bail!("unexpected error: {other}"),
        Ok(_) => anyhow::bail!("loaded without running_var"),
    }
    Ok(())
}
