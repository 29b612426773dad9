//! The interface region detectors implement, image decoding for them, and the conversion of
//! their output into region-feature rows.
//!
//! A detector is split in two so host and device work can overlap: [`Preprocess`] (shared, run
//! on many rayon threads at once) turns decoded images into model inputs, while
//! [`RegionDetector::detect`] (exclusive, one caller) runs the model on a batch of them.

use std::io::Cursor;
use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use image::{DynamicImage, ImageReader, Limits};
use schemas::region_features::{DetectorInfo, RegionRecord, RegionStatus};

/// One decoded image, RGB8 row-major HWC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes: rows top to bottom, pixels left to right, R G B.
    pub pixels: Vec<u8>,
}

/// What a detector found in one image: boxes in that image's pixels, by descending confidence.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Regions {
    /// Boxes `(x1, y1, x2, y2)` in pixels of the original (decoded) image.
    pub boxes: Vec<[f32; 4]>,
    /// Object class per box.
    pub class_ids: Vec<u32>,
    /// Confidence of each box's class, 0..=1.
    pub class_scores: Vec<f32>,
    /// Attribute class per box, for detectors that predict attributes.
    pub attribute_ids: Option<Vec<u32>>,
    /// Confidence of each box's attribute.
    pub attribute_scores: Option<Vec<f32>>,
    /// Pooled features, `boxes.len() * feature_dim` values, one box after another.
    pub features: Vec<f32>,
}

/// A prepared model input: f32 tensor data plus the original size.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Width of the decoded image, pixels (what the boxes must refer to).
    pub original_width: u32,
    /// Height of the decoded image, pixels.
    pub original_height: u32,
    /// Width of the model input; images of equal input size are batched together.
    pub input_width: u32,
    /// Height of the model input.
    pub input_height: u32,
    /// The input tensor, laid out as the detector wants it (e.g. CHW, normalised).
    pub data: Vec<f32>,
}

/// Host-side preprocessing of one image (resize / normalise to the model's input). Called from
/// many rayon threads at once while the detector runs the previous batch.
pub trait Preprocess: Send + Sync {
    /// Turns one decoded image into a model input.
    fn prepare(&self, image: &RgbImage) -> anyhow::Result<Prepared>;
}

/// A region detector run in batches on the device.
pub trait RegionDetector: Send {
    /// Name, version, feature_dim, class counts (stored in the shard's metadata).
    fn info(&self) -> DetectorInfo;
    /// The preprocessing that makes this detector's inputs; shared with decoding threads, so
    /// it runs while [`RegionDetector::detect`] holds the detector.
    fn preprocessor(&self) -> Arc<dyn Preprocess>;
    /// Runs the model on a batch of prepared images (all of one input size), returning one
    /// [`Regions`] per input, in input order. An error fails the whole run.
    fn detect(&mut self, batch: Vec<Prepared>) -> anyhow::Result<Vec<Regions>>;
}

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The header announces more pixels than the cap allows (a decompression bomb, or simply
    /// too large).
    #[error(
        "{width}x{height} = {pixels} pixels is over the cap of {max_pixels} decoded pixels \
         (max_decoded_pixels)"
    )]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// `width * height`.
        pixels: u64,
        /// The cap.
        max_pixels: u64,
    },
    /// The bytes are not an image in a supported format (JPEG, PNG, WebP), or are corrupt.
    #[error("undecodable image ({stage}): {source}")]
    Undecodable {
        /// `format`, `header` or `decode`.
        stage: &'static str,
        /// The decoder's error.
        source: image::ImageError,
    },
}

impl DecodeError {
    /// A short code for error tallies: `too_many_pixels` or `decode`.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooManyPixels { .. } => "too_many_pixels",
            DecodeError::Undecodable { .. } => "decode",
        }
    }
}

/// Decodes `bytes` (JPEG, PNG or WebP, format sniffed from the content) to RGB8. Alpha is
/// dropped, not composited; grey is expanded to three channels; 16-bit samples are scaled to 8.
/// An image whose header announces more than `max_pixels` pixels is refused before any pixel
/// is decoded, and decoder allocations are bounded by the same cap. EXIF orientation is not
/// applied: the boxes refer to the stored pixels (the pipeline already applied it when
/// re-encoding).
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let undecodable = |stage| move |source| DecodeError::Undecodable { stage, source };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| undecodable("format")(image::ImageError::IoError(e)))?;
    let mut limits = Limits::default();
    // 8 bytes a pixel covers 16-bit RGBA, plus 16 MiB of decoder state.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(16 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(undecodable("header"))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            max_pixels,
        });
    }
    let rgb = match DynamicImage::from_decoder(decoder).map_err(undecodable("decode"))? {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    };
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// Why a detector's output can't become a region row.
#[derive(Debug, thiserror::Error)]
#[error("{key}: detector returned {found} values for `{field}`, expected {expected}")]
pub struct RegionsMismatch {
    /// The pair key.
    pub key: String,
    /// Which field is off.
    pub field: &'static str,
    /// Its length.
    pub found: usize,
    /// The length `boxes.len()` (and `feature_dim`) call for.
    pub expected: usize,
}

/// The `ok` row for `key`: `regions` found in an image of `image_size` (width, height) pixels,
/// features converted to f16. Refuses per-box lists whose lengths disagree with the boxes, or
/// features that are not `boxes.len() * feature_dim` long.
pub fn to_record(
    key: &str,
    image_size: (u32, u32),
    regions: Regions,
    feature_dim: usize,
) -> Result<RegionRecord, RegionsMismatch> {
    let n = regions.boxes.len();
    let lengths = [
        ("class_ids", regions.class_ids.len(), n),
        ("class_scores", regions.class_scores.len(), n),
        (
            "attribute_ids",
            regions.attribute_ids.as_ref().map_or(n, Vec::len),
            n,
        ),
        (
            "attribute_scores",
            regions.attribute_scores.as_ref().map_or(n, Vec::len),
            n,
        ),
        ("features", regions.features.len(), n * feature_dim),
    ];
    if let Some((field, found, expected)) = lengths.into_iter().find(|(_, f, e)| f != e) {
        return Err(RegionsMismatch {
            key: key.to_owned(),
            field,
            found,
            expected,
        });
    }
    let mut features = vec![f16::ZERO; regions.features.len()];
    features.convert_from_f32_slice(&regions.features);
    Ok(RegionRecord {
        key: key.to_owned(),
        status: RegionStatus::Ok,
        error_message: None,
        image_size: Some(image_size),
        boxes: regions.boxes,
        class_ids: regions.class_ids,
        class_scores: regions.class_scores,
        attribute_ids: regions.attribute_ids,
        attribute_scores: regions.attribute_scores,
        features,
    })
}

/// The `failed` row for `key`, with `message` as its error message.
pub fn failed_record(key: &str, message: String) -> RegionRecord {
    RegionRecord {
        key: key.to_owned(),
        status: RegionStatus::Failed,
        error_message: Some(message),
        image_size: None,
        boxes: Vec::new(),
        class_ids: Vec::new(),
        class_scores: Vec::new(),
        attribute_ids: None,
        attribute_scores: None,
        features: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(image: DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn grey_is_expanded_and_alpha_dropped_not_composited() {
        let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 10 + y) as u8]));
        let png = encode(DynamicImage::ImageLuma8(grey), image::ImageFormat::Png);
        let rgb = decode_rgb(&png, 100).unwrap();
        assert_eq!((rgb.width, rgb.height), (3, 2));
        assert_eq!(&rgb.pixels[..6], &[0, 0, 0, 10, 10, 10]);
        assert_eq!(&rgb.pixels[15..18], &[21, 21, 21]);

        // A fully transparent red pixel stays red (composited over white it would turn white).
        let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([200, 10, 20, 0]));
        let png = encode(DynamicImage::ImageRgba8(rgba), image::ImageFormat::Png);
        let rgb = decode_rgb(&png, 100).unwrap();
        assert_eq!(rgb.pixels, [200, 10, 20].repeat(4));
    }

    #[test]
    fn the_pixel_cap_refuses_large_images_before_decoding() {
        let image = image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3]));
        let jpeg = encode(DynamicImage::ImageRgb8(image), image::ImageFormat::Jpeg);
        assert_eq!(decode_rgb(&jpeg, 1200).unwrap().pixels.len(), 40 * 30 * 3);
        let error = decode_rgb(&jpeg, 1199).unwrap_err();
        assert_eq!(error.code(), "too_many_pixels");
        let message = error.to_string();
        assert!(
            message.contains("40x30 = 1200 pixels") && message.contains("max_decoded_pixels"),
            "{message}"
        );
    }

    #[test]
    fn garbage_and_truncated_files_are_decode_errors() {
        let error = decode_rgb(b"definitely not an image", 1000).unwrap_err();
        assert_eq!(error.code(), "decode");
        let image = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 80, 70]));
        let png = encode(DynamicImage::ImageRgb8(image), image::ImageFormat::Png);
        let error = decode_rgb(&png[..png.len() / 2], 1 << 20).unwrap_err();
        assert_eq!(error.code(), "decode", "{error}");
    }

    #[test]
    fn records_convert_features_to_f16_and_check_lengths() {
        let regions = Regions {
            boxes: vec![[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 8.0, 8.0]],
            class_ids: vec![3, 1],
            class_scores: vec![0.9, 0.5],
            attribute_ids: None,
            attribute_scores: None,
            features: vec![0.5, -2.0, 1.0, 65504.0],
        };
        let record = to_record("00001-000002", (10, 20), regions.clone(), 2).unwrap();
        assert_eq!(record.status, RegionStatus::Ok);
        assert_eq!(record.image_size, Some((10, 20)));
        assert_eq!(
            record.features,
            [0.5, -2.0, 1.0, 65504.0].map(f16::from_f32).to_vec()
        );
        let error = to_record("00001-000002", (10, 20), regions.clone(), 3).unwrap_err();
        assert_eq!(
            (error.field, error.found, error.expected),
            ("features", 4, 6)
        );
        let short = Regions {
            attribute_scores: Some(vec![0.1]),
            ..regions
        };
        let error = to_record("k", (10, 20), short, 2).unwrap_err();
        assert_eq!(
            error.to_string(),
            "k: detector returned 1 values for `attribute_scores`, expected 2"
        );
    }
}
