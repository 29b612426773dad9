//! Input preprocessing of the detectron2 BUTD extraction: resize the shortest side with
//! `ResizeShortestEdge` (detectron2 `data/transforms/transform_gen.py`), which resizes with PIL's
//! bilinear filter (`ResizeTransform.apply_image`, `Image.BILINEAR`), then BGR order minus the
//! caffe pixel means (`GeneralizedRCNN.normalizer`, `PIXEL_STD` 1).
//!
//! The resampling reproduces Pillow's `libImaging/Resample.c` for 8-bit images (separable
//! triangle filter widened by the downscale factor, 22-bit fixed-point coefficients, horizontal
//! pass first, each pass rounded to `u8`), so the network sees the same pixels as the Python
//! extractor.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Width or height is zero.
    #[error("image has an empty side ({width}x{height})")]
    Empty {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
    },
    /// The pixel buffer does not hold `width * height * 3` bytes.
    #[error("RGB buffer holds {found} bytes, {width}x{height}x3 needs {expected}")]
    BufferSize {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Bytes present.
        found: usize,
        /// Bytes needed.
        expected: usize,
    },
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R, G, B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButdImage {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl ButdImage {
    /// Wraps an interleaved RGB buffer of `width * height * 3` bytes.
    pub fn new(width: usize, height: usize, rgb: Vec<u8>) -> Result<Self, ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::Empty { width, height });
        }
        let expected = width * height * 3;
        if rgb.len() != expected {
            return Err(ImageError::BufferSize {
                width,
                height,
                found: rgb.len(),
                expected,
            });
        }
        Ok(Self { width, height, rgb })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// This image resized to `new_width x new_height` with Pillow's bilinear filter.
    pub fn resize_bilinear(&self, new_width: usize, new_height: usize) -> Self {
        let mut pixels = self.rgb.clone();
        let mut width = self.width;
        if new_width != self.width {
            pixels = resample_horizontal(&pixels, width, self.height, new_width);
            width = new_width;
        }
        if new_height != self.height {
            pixels = resample_vertical(&pixels, width, self.height, new_height);
        }
        Self {
            width: new_width,
            height: new_height,
            rgb: pixels,
        }
    }
}

/// `(height, width)` after `ResizeShortestEdge(min_size, max_size)`: the short side becomes
/// `min_size` unless the long side would exceed `max_size`, then the long side becomes
/// `max_size`; both rounded half up (`int(x + 0.5)`).
pub fn resized_size(
    height: usize,
    width: usize,
    min_size: usize,
    max_size: usize,
) -> (usize, usize) {
    let (h, w) = (height as f64, width as f64);
    let size = min_size as f64;
    let scale = size / h.min(w);
    let (mut new_h, mut new_w) = if h < w {
        (size, scale * w)
    } else {
        (scale * h, size)
    };
    let longest = new_h.max(new_w);
    if longest > max_size as f64 {
        let scale = max_size as f64 / longest;
        new_h *= scale;
        new_w *= scale;
    }
    ((new_h + 0.5) as usize, (new_w + 0.5) as usize)
}

/// The network input for `image`: resized, BGR, minus `pixel_mean_bgr`, as `[1, 3, H, W]`.
pub fn to_input<B: Backend>(
    image: &ButdImage,
    pixel_mean_bgr: [f32; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let (h, w) = (image.height, image.width);
    let mut values = vec![0.0f32; 3 * h * w];
    for (i, px) in image.rgb.chunks_exact(3).enumerate() {
        for (c, mean) in pixel_mean_bgr.iter().enumerate() {
            // Channel 0 of the network is blue: BGR is RGB reversed.
            values[c * h * w + i] = f32::from(px[2 - c]) - mean;
        }
    }
    Tensor::from_data(TensorData::new(values, [1, 3, h, w]), device)
}

/// Pillow `PRECISION_BITS` for 8-bit resampling (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Filter taps of one output pixel: first input index and fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear (triangle) filter.
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle filter's support is 1
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = raw.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let weights = raw
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    if k < 0.0 {
                        (-0.5 + k * one) as i32
                    } else {
                        (0.5 + k * one) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// Pillow `clip8`: rounds (the accumulator starts at one half) and saturates to `u8`.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn resample_horizontal(src: &[u8], width: usize, height: usize, new_width: usize) -> Vec<u8> {
    let taps = taps(width, new_width);
    let mut out = vec![0u8; new_width * height * 3];
    for y in 0..height {
        let row = &src[y * width * 3..(y + 1) * width * 3];
        for (x, tap) in taps.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (i, &k) in tap.weights.iter().enumerate() {
                    acc += i32::from(row[(tap.start + i) * 3 + c]) * k;
                }
                out[(y * new_width + x) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

fn resample_vertical(src: &[u8], width: usize, height: usize, new_height: usize) -> Vec<u8> {
    let taps = taps(height, new_height);
    let stride = width * 3;
    let mut out = vec![0u8; new_height * stride];
    for (y, tap) in taps.iter().enumerate() {
        for i in 0..stride {
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (j, &k) in tap.weights.iter().enumerate() {
                acc += i32::from(src[(tap.start + j) * stride + i]) * k;
            }
            out[y * stride + i] = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_side_is_scaled_and_the_longest_capped() {
        // 600 on the short side of 480x640 (h x w) → 600x800.
        assert_eq!(resized_size(480, 640, 600, 1000), (600, 800));
        // A 1:3 panorama hits the 1000 cap: 600x1800 → 333.3x1000.
        assert_eq!(resized_size(100, 300, 600, 1000), (333, 1000));
        // Portrait keeps the orientation.
        assert_eq!(resized_size(640, 480, 600, 1000), (800, 600));
    }

    #[test]
    fn same_size_resize_is_the_identity() {
        let rgb: Vec<u8> = (0..5 * 4 * 3).map(|v| (v * 7 % 256) as u8).collect();
        let image = ButdImage::new(5, 4, rgb).unwrap();
        assert_eq!(image.resize_bilinear(5, 4), image);
    }

    #[test]
    fn constant_images_stay_constant() {
        let image = ButdImage::new(7, 3, vec![200; 7 * 3 * 3]).unwrap();
        let up = image.resize_bilinear(11, 9);
        assert!(up.rgb().iter().all(|&v| v == 200));
        let down = image.resize_bilinear(2, 2);
        assert!(down.rgb().iter().all(|&v| v == 200));
    }

    #[test]
    fn buffer_size_is_checked() {
        assert!(matches!(
            ButdImage::new(2, 2, vec![0; 11]),
            Err(ImageError::BufferSize { expected: 12, .. })
        ));
        assert!(matches!(
            ButdImage::new(0, 2, vec![]),
            Err(ImageError::Empty { .. })
        ));
    }
}
