//! RoIAlign with `torchvision.ops.roi_align` semantics, evaluated on the tensor's device.
//!
//! Follows torchvision's CPU/CUDA kernels: box corners are scaled by `spatial_scale` and shifted
//! by half a pixel when `aligned`; without `aligned`, boxes are forced to be at least 1x1. Each
//! output bin averages a `grid_h x grid_w` grid of bilinear samples (`sampling_ratio`, or
//! `ceil(roi_size / output_size)` when it is 0). Samples outside `[-1, size]` count as 0, the rest
//! are clamped into the feature map; a box with an empty grid gives zeros.
//!
//! The sample positions, bilinear corner indices and weights are computed on the host (cheap:
//! they do not depend on the channels). Because the samples of one bin form a product grid and
//! bilinear weights factor into a y part and an x part, each bin reduces to a weighted sum over
//! `rows x cols` distinct feature pixels, so repeated corners are merged before upload. The
//! device then does one row gather from the `[N*H*W, C]` feature table, a multiply by the
//! weights and a sum per bin (split into a few passes over boxes of similar size when one gather
//! would exceed 2^26 elements, 256 MiB). The result equals torchvision's up to `f32` summation order
//! (features are assumed finite: a zero weight on an infinite feature gives NaN in both, but
//! not always at the same places).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Number of `f32` elements gathered per device pass (256 MiB); larger jobs are split into
/// chunks of boxes with similar sample counts.
const GATHER_BUDGET: usize = 1 << 26;

/// A region of interest in input-image pixels (`x1, y1, x2, y2`) on image `batch_index`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    /// Index of the image in the feature batch (`N` dimension).
    pub batch_index: usize,
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

/// Parameters of [`roi_align`], named like `torchvision.ops.roi_align`'s arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignConfig {
    /// Output bins per box vertically.
    pub output_height: usize,
    /// Output bins per box horizontally.
    pub output_width: usize,
    /// Feature-map pixels per image pixel (e.g. `1/16` for a stride-16 map).
    pub spatial_scale: f32,
    /// Samples per bin along each axis; 0 = adaptive `ceil(roi_size / output_size)`.
    pub sampling_ratio: usize,
    /// Shift box corners by -0.5 feature pixel (detectron2 `ROIAlignV2`); `false` is the legacy
    /// behaviour that also forces boxes to at least 1x1.
    pub aligned: bool,
}

/// RoIAlign of `features` (`[N, C, H, W]`) over `rois`; returns `[rois.len(), C, out_h, out_w]`
/// on the features' device.
///
/// # Panics
/// If an output size or `H`/`W` is 0, or a box's `batch_index >= N`.
pub fn roi_align<B: Backend>(
    features: Tensor<B, 4>,
    rois: &[Roi],
    config: &RoiAlignConfig,
) -> Tensor<B, 4> {
    roi_align_chunked(features, rois, config, GATHER_BUDGET)
}

/// [`roi_align`] with an explicit gather budget (elements per device pass).
fn roi_align_chunked<B: Backend>(
    features: Tensor<B, 4>,
    rois: &[Roi],
    config: &RoiAlignConfig,
    budget: usize,
) -> Tensor<B, 4> {
    let [n, c, h, w] = features.dims();
    let (oh, ow) = (config.output_height, config.output_width);
    assert!(oh > 0 && ow > 0, "roi_align: output size must be positive");
    assert!(h > 0 && w > 0, "roi_align: feature map must not be empty");
    let device = features.device();
    if rois.is_empty() || c == 0 {
        return Tensor::zeros([rois.len(), c, oh, ow], &device);
    }

    let plans: Vec<RoiPlan> = rois
        .iter()
        .map(|roi| {
            assert!(
                roi.batch_index < n,
                "roi_align: batch_index {} out of range for batch of {n}",
                roi.batch_index
            );
            RoiPlan::new(roi, config, h, w)
        })
        .collect();
    // [N, C, H, W] -> rows of C channels, row index (n * H + y) * W + x.
    let table = features.permute([0, 2, 3, 1]).reshape([n * h * w, c]);

    let bins = oh * ow;
    let box_cost = |entries: usize| bins * entries * c;
    let max_entries = plans.iter().map(RoiPlan::entries).max().unwrap_or(1);
    if box_cost(max_entries) * plans.len() <= budget {
        let all: Vec<usize> = (0..plans.len()).collect();
        return pool_chunk(&table, &plans, &all, [h, w, c], [oh, ow], &device);
    }

    // Over budget: group boxes of similar size so padding stays small, pool each group with
    // one gather, then restore the input order.
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&k| plans[k].entries());
    let mut outputs = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        // Sorted ascending, so the last box of a chunk has its largest entry count.
        while end < order.len()
            && box_cost(plans[order[end]].entries()) * (end + 1 - start) <= budget
        {
            end += 1;
        }
        let chunk = &order[start..end];
        outputs.push(pool_chunk(
            &table,
            &plans,
            chunk,
            [h, w, c],
            [oh, ow],
            &device,
        ));
        start = end;
    }
    let mut position = vec![0_i64; order.len()];
    for (pos, &k) in order.iter().enumerate() {
        position[k] = pos as i64;
    }
    let position =
        Tensor::<B, 1, Int>::from_data(TensorData::new(position, [order.len()]), &device);
    Tensor::cat(outputs, 0).select(0, position)
}

/// Pools the boxes `chunk` (indices into `plans`) with one gather; returns `[len, C, oh, ow]`.
fn pool_chunk<B: Backend>(
    table: &Tensor<B, 2>,
    plans: &[RoiPlan],
    chunk: &[usize],
    [h, w, c]: [usize; 3],
    [oh, ow]: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 4> {
    let entries = chunk.iter().map(|&k| plans[k].entries()).max().unwrap_or(1);
    let len = chunk.len() * oh * ow * entries;
    let mut indices = Vec::with_capacity(len);
    let mut weights = Vec::with_capacity(len);
    for &k in chunk {
        let plan = &plans[k];
        let base = plan.batch_index * h;
        for ys in &plan.y_taps {
            for xs in &plan.x_taps {
                for &(y, wy) in ys {
                    for &(x, wx) in xs {
                        indices.push(((base + y) * w + x) as i64);
                        weights.push(wy * wx * plan.inv_count);
                    }
                }
                // Pad to a common length with zero-weight reads of row 0.
                let used = ys.len() * xs.len();
                indices.extend(std::iter::repeat_n(0, entries - used));
                weights.extend(std::iter::repeat_n(0.0_f32, entries - used));
            }
        }
    }
    let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(indices, [len]), device);
    let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [len, 1]), device);
    let gathered = table.clone().select(0, indices) * weights;
    gathered
        .reshape([chunk.len() * oh * ow, entries, c])
        .sum_dim(1)
        .reshape([chunk.len(), oh, ow, c])
        .permute([0, 3, 1, 2])
}

/// Host-side sampling plan of one box: per output row/column, the feature rows/columns it reads
/// and their summed bilinear weights.
struct RoiPlan {
    batch_index: usize,
    /// For each output row `ph`: `(feature row, weight)` summed over the bin's y samples.
    y_taps: Vec<Vec<(usize, f32)>>,
    /// For each output column `pw`: `(feature column, weight)` summed over the x samples.
    x_taps: Vec<Vec<(usize, f32)>>,
    /// `1 / max(grid_h * grid_w, 1)`: the average over the sample grid.
    inv_count: f32,
}

impl RoiPlan {
    fn new(roi: &Roi, config: &RoiAlignConfig, height: usize, width: usize) -> Self {
        let offset = if config.aligned { 0.5 } else { 0.0 };
        let scale = config.spatial_scale;
        let start_x = roi.x1 * scale - offset;
        let start_y = roi.y1 * scale - offset;
        let mut roi_w = (roi.x2 * scale - offset) - start_x;
        let mut roi_h = (roi.y2 * scale - offset) - start_y;
        if !config.aligned {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let grid = |size: f32, bins: usize| -> i64 {
            if config.sampling_ratio > 0 {
                config.sampling_ratio as i64
            } else {
                (size / bins as f32).ceil() as i64
            }
        };
        let (oh, ow) = (config.output_height, config.output_width);
        let (grid_h, grid_w) = (grid(roi_h, oh), grid(roi_w, ow));
        Self {
            batch_index: roi.batch_index,
            y_taps: axis_taps(start_y, roi_h / oh as f32, grid_h, oh, height),
            x_taps: axis_taps(start_x, roi_w / ow as f32, grid_w, ow, width),
            inv_count: 1.0 / (grid_h * grid_w).max(1) as f32,
        }
    }

    /// Gathered rows per output bin (at least 1 so that reshapes never see an empty axis).
    fn entries(&self) -> usize {
        let longest = |taps: &[Vec<(usize, f32)>]| taps.iter().map(Vec::len).max().unwrap_or(0);
        (longest(&self.y_taps) * longest(&self.x_taps)).max(1)
    }
}

/// Bilinear taps along one axis for each of `bins` output bins: the `grid` sample coordinates
/// `start + p * bin_size + (i + 0.5) * bin_size / grid`, each contributing `1 - frac` to its
/// floor pixel and `frac` to the next one, merged per pixel. Samples outside `[-1, size]`
/// contribute nothing (which zeroes the whole 2-D sample); the others are clamped to
/// `[0, size - 1]`.
fn axis_taps(
    start: f32,
    bin_size: f32,
    grid: i64,
    bins: usize,
    size: usize,
) -> Vec<Vec<(usize, f32)>> {
    let last = size - 1;
    (0..bins)
        .map(|p| {
            let mut taps: Vec<(usize, f32)> = Vec::new();
            let mut add = |pixel: usize, weight: f32| match taps.iter_mut().find(|t| t.0 == pixel) {
                Some(tap) => tap.1 += weight,
                None => taps.push((pixel, weight)),
            };
            for i in 0..grid.max(0) {
                let v = start + p as f32 * bin_size + (i as f32 + 0.5) * bin_size / grid as f32;
                // Written as !(inside) so that NaN coordinates count as outside.
                if !(v >= -1.0 && v <= size as f32) {
                    continue;
                }
                let v = v.max(0.0);
                let low = v as usize;
                let (low, high, frac) = if low >= last {
                    (last, last, 0.0)
                } else {
                    (low, low + 1, v - low as f32)
                };
                add(low, 1.0 - frac);
                add(high, frac);
            }
            taps.retain(|t| t.1 != 0.0);
            taps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    /// Feature map `[1, 2, 4, 5]`: channel 0 holds `10 * y + x`, channel 1 its negation.
    fn ramp() -> Tensor<B, 4> {
        let mut data = Vec::new();
        for sign in [1.0, -1.0] {
            for y in 0..4 {
                for x in 0..5 {
                    data.push(sign * (10 * y + x) as f32);
                }
            }
        }
        Tensor::from_data(TensorData::new(data, [1, 2, 4, 5]), &Default::default())
    }

    fn values(t: Tensor<B, 4>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn config(oh: usize, ow: usize, sampling_ratio: usize, aligned: bool) -> RoiAlignConfig {
        RoiAlignConfig {
            output_height: oh,
            output_width: ow,
            spatial_scale: 1.0,
            sampling_ratio,
            aligned,
        }
    }

    fn roi(x1: f32, y1: f32, x2: f32, y2: f32) -> Roi {
        Roi {
            batch_index: 0,
            x1,
            y1,
            x2,
            y2,
        }
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn linear_map_gives_bin_centres() {
        // Bilinear sampling of the linear ramp is exact: each bin's mean is the ramp at its
        // centre. Box (1, 0)-(3, 2), 2x2 bins of 1 px, one sample at each bin centre.
        let out = values(roi_align(
            ramp(),
            &[roi(1.0, 0.0, 3.0, 2.0)],
            &config(2, 2, 0, false),
        ));
        assert_close(&out, &[6.5, 7.5, 16.5, 17.5, -6.5, -7.5, -16.5, -17.5]);
        // aligned shifts the samples by -0.5 px.
        let out = values(roi_align(
            ramp(),
            &[roi(1.0, 0.0, 3.0, 2.0)],
            &config(2, 2, 0, true),
        ));
        assert_close(&out, &[1.0, 2.0, 11.0, 12.0, -1.0, -2.0, -11.0, -12.0]);
    }

    #[test]
    fn samples_average_and_clamp_at_the_border() {
        // One bin over x in [3, 5], y in [2, 4] with a 2x2 grid: x samples 3.5 and 4.5
        // (4.5 clamps to column 4), y samples 2.5 and 3.5 (3.5 clamps to row 3).
        // Mean x = (3.5 + 4) / 2 = 3.75, mean y = (2.5 + 3) / 2 = 2.75.
        let out = values(roi_align(
            ramp(),
            &[roi(3.0, 2.0, 5.0, 4.0)],
            &config(1, 1, 2, false),
        ));
        assert_close(&out, &[31.25, -31.25]);
    }

    #[test]
    fn samples_outside_count_as_zero() {
        // 1x1 output, 2x2 grid over x in [-3, 1]: x samples -2 (outside, dropped) and 0;
        // y in [0, 2]: samples 0.5 and 1.5. Sum over the 2 valid samples / 4.
        let out = values(roi_align(
            ramp(),
            &[roi(-3.0, 0.0, 1.0, 2.0)],
            &config(1, 1, 2, false),
        ));
        assert_close(&out, &[(5.0 + 15.0) / 4.0, -(5.0 + 15.0) / 4.0]);
        // Entirely outside: zeros.
        let out = values(roi_align(
            ramp(),
            &[roi(20.0, 20.0, 30.0, 30.0)],
            &config(1, 2, 0, true),
        ));
        assert_close(&out, &[0.0; 4]);
    }

    #[test]
    fn samples_on_the_limits_are_kept_and_clamped() {
        // 1x1 boxes, one sample at (x1 + 0.5, y1 + 0.5) = (5, 0.5): x == W is still inside and
        // clamps to column 4; x == -1 clamps to column 0; anything beyond gives 0.
        let cfg = config(1, 1, 1, false);
        let rois = [
            roi(4.5, 0.0, 5.5, 1.0),
            roi(-1.5, 0.0, -0.5, 1.0),
            roi(4.75, 0.0, 5.75, 1.0),
            roi(0.0, -1.75, 1.0, -0.75),
        ];
        let out = values(roi_align(ramp(), &rois, &cfg));
        assert_close(&out, &[9.0, -9.0, 5.0, -5.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn legacy_mode_forces_one_pixel_boxes() {
        // A point box at (2, 1) becomes 1x1: sample at (2.5, 1.5) -> 17.5. With `aligned` the
        // adaptive grid is ceil(0) = 0 samples, so the output is 0.
        let point = [roi(2.0, 1.0, 2.0, 1.0)];
        assert_close(
            &values(roi_align(ramp(), &point, &config(1, 1, 0, false))),
            &[17.5, -17.5],
        );
        assert_close(
            &values(roi_align(ramp(), &point, &config(1, 1, 0, true))),
            &[0.0, 0.0],
        );
    }

    #[test]
    fn batch_index_and_scale_select_the_map() {
        let device = Default::default();
        let two = Tensor::cat(vec![ramp(), ramp().mul_scalar(2.0)], 0);
        let mut r = roi(2.0, 0.0, 6.0, 4.0); // scale 1/2 -> (1, 0)-(3, 2)
        r.batch_index = 1;
        let cfg = RoiAlignConfig {
            spatial_scale: 0.5,
            ..config(2, 2, 0, false)
        };
        let out = values(roi_align(two, &[r], &cfg));
        assert_close(&out, &[13.0, 15.0, 33.0, 35.0, -13.0, -15.0, -33.0, -35.0]);
        let empty = roi_align(Tensor::<B, 4>::zeros([1, 3, 4, 4], &device), &[], &cfg);
        assert_eq!(empty.dims(), [0, 3, 2, 2]);
    }

    #[test]
    fn chunked_matches_single_pass_and_keeps_order() {
        let rois = [
            roi(0.0, 0.0, 5.0, 4.0),
            roi(1.2, 0.3, 1.9, 2.2),
            roi(-2.0, 1.0, 9.0, 3.5),
            roi(2.5, 2.5, 3.0, 3.0),
        ];
        let cfg = config(3, 2, 0, true);
        let single = values(roi_align(ramp(), &rois, &cfg));
        // Budget of one small box per pass forces several chunks and a reorder.
        let chunked = values(roi_align_chunked(ramp(), &rois, &cfg, 1));
        assert_close(&single, &chunked);
    }

    #[test]
    fn repeated_corners_are_merged() {
        let cfg = config(2, 2, 4, false);
        let plan = RoiPlan::new(&roi(0.0, 0.0, 2.0, 2.0), &cfg, 4, 5);
        // 4 samples in [0, 1) touch only pixels 0 and 1.
        assert_eq!(
            plan.y_taps[0].iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(plan.entries(), 4);
        let total: f32 = plan.y_taps[0].iter().map(|t| t.1).sum();
        assert!((total - 4.0).abs() < 1e-6);
    }
}
