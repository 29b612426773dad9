//! Image filtering and storage for `pipeline ingest`: the LAIT "image filtering" step.
//!
//! [`process`] turns the bytes of one downloaded image into what a pair shard stores, or refuses
//! them with an [`ImageReject`]:
//!
//! 1. The real format, sniffed from the magic bytes (never trusted from the URL or the
//!    `Content-Type`); formats outside [`ImageConfig::formats`] are refused (`format`).
//! 2. The declared `Content-Type` is compared with what the bytes are (see [`ImageConfig::
//!    strict_content_type`] for the policy).
//! 3. The header alone is read and the size rules run before any pixel is decoded: more than
//!    [`ImageConfig::max_pixels`] pixels or a side over [`ImageConfig::max_dimension`] is a
//!    decompression bomb (`too_many_pixels`); the paper's rule keeps an image only when its width
//!    AND height are both greater than [`ImageConfig::min_width`] / [`ImageConfig::min_height`]
//!    (`too_small`), on the displayed (EXIF-oriented) size. PNG, WebP, GIF and BMP decoders also
//!    run under `image`'s [`Limits`] as a second line.
//! 4. Decode (JPEGs that lack their end-of-image marker are refused as truncated), resize once so
//!    the longer side is at most [`ImageConfig::max_side`] (aspect kept, never enlarged,
//!    Catmull-Rom convolution with `fast_image_resize`, alpha-weighted), flatten any alpha onto
//!    white, apply the EXIF orientation, and encode a baseline JFIF JPEG with libjpeg-turbo.
//!    Animated GIF/WebP/PNG keep their first frame.
//! 5. SHA-256 of the downloaded bytes as they came (lower-case hex; [`sha256_hex`] gives it for
//!    refused bytes too) and a 64-bit DCT perceptual hash ([`phash`]) of the stored pixels, for
//!    near-duplicate search with [`hamming`].
//!
//! Every refusal is permanent: retrying the same bytes gives the same answer. [`ImageReject::
//! is_drop`] tells a filter drop (`dropped`) from a failure (`failed_permanent`).
//!
//! Speed choices, measured here on the photos under `assets/photos` (see [`bench()`] and
//! `bench/pipeline.sh`, which runs img2dataset's image step beside it):
//! - JPEG decoding and encoding: libjpeg-turbo through the `turbojpeg` crate. At full scale
//!   it decodes each photo 6-36% faster than `zune-jpeg` (two runs); its reduced IDCT decodes
//!   a 1411x1411 photo at 1/2 scale in 3.5 ms against 5.4 ms in full; it encodes 512x512 at
//!   quality 90 4:2:0 in 0.7 ms against 2.0 ms for `jpeg-encoder` (SIMD).
//! - PNG decoding: `image`'s `png` (fdeflate) is 1.04-2.8x faster than `zune-png` per photo.
//! - Resizing: `fast_image_resize` (AVX2) is about 10x faster than `image::imageops::resize`.
//! - pHash: the hand-written one takes about 0.1 ms on a 512x342 image, `image_hasher`'s DCT
//!   hash 1.2 ms.
//! - What is left is mostly entropy decoding (JPEG Huffman, PNG inflate): [`bench()`] times
//!   the decode step alone too, the ceiling no resize or encoder work can lift.

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::Instant;

use fast_image_resize as fir;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An image format the crawler may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// JPEG / JFIF / EXIF.
    Jpeg,
    /// PNG (APNG: first frame).
    Png,
    /// WebP, lossy or lossless (animated: first frame).
    Webp,
    /// GIF (animated: first frame).
    Gif,
    /// Windows bitmap.
    Bmp,
}

impl SourceFormat {
    /// Every format, in the order of [`ImageConfig::formats`]' default.
    pub const ALL: [SourceFormat; 5] = [
        SourceFormat::Jpeg,
        SourceFormat::Png,
        SourceFormat::Webp,
        SourceFormat::Gif,
        SourceFormat::Bmp,
    ];

    /// Lower-case name, as in the configuration (`jpeg`, `png`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Png => "png",
            SourceFormat::Webp => "webp",
            SourceFormat::Gif => "gif",
            SourceFormat::Bmp => "bmp",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            SourceFormat::Jpeg => ImageFormat::Jpeg,
            SourceFormat::Png => ImageFormat::Png,
            SourceFormat::Webp => ImageFormat::WebP,
            SourceFormat::Gif => ImageFormat::Gif,
            SourceFormat::Bmp => ImageFormat::Bmp,
        }
    }

    fn from_image_format(format: ImageFormat) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.image_format() == format)
    }

    /// The format an `image/*` media type names (`image/jpeg`, `image/x-png`, ...), if any.
    fn from_media_type(media_type: &str) -> Option<Self> {
        Some(match media_type {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => SourceFormat::Jpeg,
            "image/png" | "image/x-png" | "image/apng" => SourceFormat::Png,
            "image/webp" => SourceFormat::Webp,
            "image/gif" => SourceFormat::Gif,
            "image/bmp" | "image/x-bmp" | "image/x-ms-bmp" => SourceFormat::Bmp,
            _ => return None,
        })
    }
}

/// Image filter and storage settings (`[image]` in the ingest configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// An image is kept only if its width is greater than this, in pixels (LAIT: width AND
    /// height > 300). Default 300.
    pub min_width: u32,
    /// An image is kept only if its height is greater than this, in pixels. Default 300.
    pub min_height: u32,
    /// Longest side of the stored image, pixels; larger images are scaled down (aspect kept),
    /// smaller ones are never scaled up. Default 512.
    pub max_side: u32,
    /// Quality of the stored JPEG, 1..=100 (libjpeg's scale and tables). Default 90.
    pub jpeg_quality: u8,
    /// Store chroma at half resolution both ways (4:2:0), as libjpeg, PIL and OpenCV do by
    /// default; `false` keeps it whole (4:4:4). Measured on `assets/photos` at quality 90:
    /// 4:2:0 makes files about 20% smaller and the whole of [`process`] 20-25% faster, for
    /// 1-4 dB less PSNR (all of it in colour detail). Default true.
    pub jpeg_chroma_subsampling: bool,
    /// Decompression-bomb cap: images whose header announces more pixels than this are refused
    /// before decoding (`too_many_pixels`). Default 50 000 000 (e.g. 8660 x 5773).
    pub max_pixels: u64,
    /// Longest side accepted, pixels; longer is refused before decoding (`too_many_pixels`).
    /// Default 20 000.
    pub max_dimension: u32,
    /// Formats accepted, by their sniffed bytes. Default all: jpeg, png, webp, gif, bmp.
    pub formats: Vec<SourceFormat>,
    /// How a declared `Content-Type` must agree with the sniffed format. Absent, empty,
    /// `application/octet-stream` and `binary/octet-stream` always pass; a type outside `image/*`
    /// (e.g. `text/html`) is always refused (`content_type_mismatch`). When `false` (lenient), an
    /// `image/*` type naming another format (PNG bytes served as `image/jpeg`) is accepted, since
    /// browsers sniff image bytes and CDNs mislabel them, and is reported in
    /// [`ProcessedImage::content_type_mismatch`]; when `true` it is refused. Default false.
    pub strict_content_type: bool,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            min_width: 300,
            min_height: 300,
            max_side: 512,
            jpeg_quality: 90,
            jpeg_chroma_subsampling: true,
            max_pixels: 50_000_000,
            max_dimension: 20_000,
            formats: SourceFormat::ALL.to_vec(),
            strict_content_type: false,
        }
    }
}

/// A setting of [`ImageConfig`] out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image configuration: {0}")]
pub struct ImageConfigError(pub String);

impl ImageConfig {
    /// Checks the ranges the encoder and the filters need: `max_side` in 1..=65535,
    /// `jpeg_quality` in 1..=100, `max_pixels` and `max_dimension` non-zero, at least one format.
    pub fn validate(&self) -> Result<(), ImageConfigError> {
        let fail = |m: &str| Err(ImageConfigError(m.to_owned()));
        if self.max_side == 0 || self.max_side > u32::from(u16::MAX) {
            return fail("max_side must be in 1..=65535");
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return fail("jpeg_quality must be in 1..=100");
        }
        if self.max_pixels == 0 || self.max_dimension == 0 {
            return fail("max_pixels and max_dimension must be positive");
        }
        if self.formats.is_empty() {
            return fail("formats must name at least one format");
        }
        Ok(())
    }
}

/// Why an image was refused. Every refusal is permanent for these bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageReject {
    /// The bytes are a known format but do not decode (corrupt, truncated, unsupported variant).
    #[error("{0}")]
    Undecodable(String),
    /// The bytes are not an image, or their format is not in [`ImageConfig::formats`].
    #[error("{0}")]
    Format(String),
    /// The declared `Content-Type` disagrees with the bytes (see
    /// [`ImageConfig::strict_content_type`]).
    #[error("{0}")]
    ContentTypeMismatch(String),
    /// Width or height is not greater than the minimum (the LAIT size filter).
    #[error("{0}")]
    TooSmall(String),
    /// The header announces more pixels, or a longer side, than allowed: a decompression bomb.
    #[error("{0}")]
    TooManyPixels(String),
}

impl ImageReject {
    /// Stable machine-readable code, stored as the pair's `drop_reason`: `undecodable`,
    /// `format`, `content_type_mismatch`, `too_small` or `too_many_pixels`.
    pub fn code(&self) -> &'static str {
        match self {
            ImageReject::Undecodable(_) => "undecodable",
            ImageReject::Format(_) => "format",
            ImageReject::ContentTypeMismatch(_) => "content_type_mismatch",
            ImageReject::TooSmall(_) => "too_small",
            ImageReject::TooManyPixels(_) => "too_many_pixels",
        }
    }

    /// Human-readable detail, stored as the pair's `error_message`.
    pub fn message(&self) -> &str {
        match self {
            ImageReject::Undecodable(m)
            | ImageReject::Format(m)
            | ImageReject::ContentTypeMismatch(m)
            | ImageReject::TooSmall(m)
            | ImageReject::TooManyPixels(m) => m,
        }
    }

    /// `true` for a filter that dropped a valid image (`too_small`: status `dropped`); `false`
    /// for bytes that are not an acceptable image at all (status `failed_permanent`).
    pub fn is_drop(&self) -> bool {
        matches!(self, ImageReject::TooSmall(_))
    }
}

/// A downloaded image that passed the filters, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// The format the downloaded bytes are in (sniffed).
    pub format: SourceFormat,
    /// `true` when the declared `Content-Type` named another image format and the lenient policy
    /// let it pass (see [`ImageConfig::strict_content_type`]).
    pub content_type_mismatch: bool,
    /// Width of the downloaded image as displayed (after its EXIF orientation), pixels.
    pub original_width: u32,
    /// Height of the downloaded image as displayed (after its EXIF orientation), pixels.
    pub original_height: u32,
    /// Width of the stored image, pixels.
    pub width: u32,
    /// Height of the stored image, pixels.
    pub height: u32,
    /// The stored image: baseline JFIF JPEG, RGB, `width` x `height`.
    pub jpeg: Vec<u8>,
    /// Lower-case hex SHA-256 of the downloaded bytes.
    pub sha256: String,
    /// 64-bit DCT perceptual hash of the stored pixels (see [`phash`]).
    pub phash: u64,
    /// The stored pixels before JPEG encoding (`width` x `height`), for the scorers.
    pub rgb: RgbImage,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Filters and re-encodes one downloaded image; see the module documentation for the steps.
///
/// `content_type` is the response's `Content-Type` header value, parameters allowed
/// (`image/jpeg; charset=binary`). `config` should have passed [`ImageConfig::validate`]; an
/// out-of-range quality or side is clamped.
pub fn process(
    bytes: &[u8],
    content_type: Option<&str>,
    config: &ImageConfig,
) -> Result<ProcessedImage, ImageReject> {
    let format = sniff(bytes, config)?;
    let content_type_mismatch = check_content_type(format, content_type, config)?;
    let Decoded { image, header } = decode(bytes, format, config)?;
    let rgb = resize_to_rgb(image, header.target_w, header.target_h)?;
    let rgb = apply_orientation(rgb, header.orientation);
    let (width, height) = rgb.dimensions();
    let jpeg = encode_jpeg(
        &rgb,
        config.jpeg_quality.clamp(1, 100),
        config.jpeg_chroma_subsampling,
    )?;
    Ok(ProcessedImage {
        format,
        content_type_mismatch,
        original_width: header.original_width,
        original_height: header.original_height,
        width,
        height,
        jpeg,
        sha256: sha256_hex(bytes),
        phash: phash(&rgb),
        rgb,
    })
}

/// The sniffed format, if it is one `config` accepts.
fn sniff(bytes: &[u8], config: &ImageConfig) -> Result<SourceFormat, ImageReject> {
    let Ok(guessed) = image::guess_format(bytes) else {
        let head: String = bytes
            .iter()
            .take(16)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        return Err(ImageReject::Format(format!(
            "not a known image format ({} bytes starting {head:?})",
            bytes.len()
        )));
    };
    match SourceFormat::from_image_format(guessed) {
        Some(format) if config.formats.contains(&format) => Ok(format),
        _ => Err(ImageReject::Format(format!(
            "format {} is not accepted",
            guessed
                .extensions_str()
                .first()
                .copied()
                .unwrap_or("unknown")
        ))),
    }
}

/// Applies the `Content-Type` policy of [`ImageConfig::strict_content_type`]; `Ok(true)` when a
/// mismatch was let through.
fn check_content_type(
    format: SourceFormat,
    content_type: Option<&str>,
    config: &ImageConfig,
) -> Result<bool, ImageReject> {
    let Some(declared) = content_type else {
        return Ok(false);
    };
    let media_type = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if matches!(
        media_type.as_str(),
        "" | "application/octet-stream" | "binary/octet-stream"
    ) {
        return Ok(false);
    }
    let refuse = || {
        ImageReject::ContentTypeMismatch(format!(
            "declared {media_type:?} but the bytes are {}",
            format.as_str()
        ))
    };
    if !media_type.starts_with("image/") {
        return Err(refuse());
    }
    if SourceFormat::from_media_type(&media_type) == Some(format) {
        return Ok(false);
    }
    if config.strict_content_type {
        Err(refuse())
    } else {
        Ok(true)
    }
}

/// What the header says, once the size rules passed.
struct Header {
    /// Width as displayed (after the EXIF orientation).
    original_width: u32,
    /// Height as displayed.
    original_height: u32,
    orientation: Orientation,
    /// Size to resize the decoded pixels to, in their stored orientation.
    target_w: u32,
    target_h: u32,
}

impl Header {
    /// Applies the size rules to a header's stored dimensions and plans the resize.
    fn check(
        width: u32,
        height: u32,
        orientation: Orientation,
        config: &ImageConfig,
    ) -> Result<Self, ImageReject> {
        let (original_width, original_height) = oriented(width, height, orientation);
        check_size(original_width, original_height, config)?;
        let (target_w, target_h) =
            fit(width, height, config.max_side.clamp(1, u32::from(u16::MAX)));
        Ok(Self {
            original_width,
            original_height,
            orientation,
            target_w,
            target_h,
        })
    }
}

/// Decoded pixels (at full or reduced scale) and their header.
struct Decoded {
    image: DynamicImage,
    header: Header,
}

/// Header checks and decoding of `bytes`, sniffed as `format`: JPEG with [`decode_jpeg`], the
/// rest with [`decode_with_image`].
fn decode(
    bytes: &[u8],
    format: SourceFormat,
    config: &ImageConfig,
) -> Result<Decoded, ImageReject> {
    if format == SourceFormat::Jpeg {
        decode_jpeg(bytes, config)
    } else {
        decode_with_image(bytes, format, config)
    }
}

/// PNG, WebP, GIF and BMP through `image`'s decoders, under [`limits`].
fn decode_with_image(
    bytes: &[u8],
    format: SourceFormat,
    config: &ImageConfig,
) -> Result<Decoded, ImageReject> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    reader.limits(limits(config));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_error(format, "header", e))?;
    let (width, height) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let header = Header::check(width, height, orientation, config)?;
    let image =
        DynamicImage::from_decoder(decoder).map_err(|e| image_error(format, "decode", e))?;
    Ok(Decoded { image, header })
}

/// JPEG: the header (size, EXIF orientation, colour space) with `zune-jpeg`, the pixels with
/// libjpeg-turbo (the `turbojpeg` crate; the decoder Chromium and Firefox use, so what it
/// refuses a browser would not show either) for YCbCr, RGB and greyscale data, at the smallest
/// power-of-two scale (1/2, 1/4, 1/8) that still covers the resize target: libjpeg-turbo's
/// reduced IDCT skips most of the work on pixels the resize would throw away. Recoverable flaws
/// (stray bytes before a marker, a bad Huffman code) are warnings, not refusals, as in a
/// browser. CMYK and YCCK JPEGs (print files; libjpeg-turbo does not convert them to RGB) are
/// decoded in full by `zune-jpeg`.
fn decode_jpeg(bytes: &[u8], config: &ImageConfig) -> Result<Decoded, ImageReject> {
    let undecodable = |stage: &str, e: zune_jpeg::errors::DecodeErrors| {
        ImageReject::Undecodable(format!("jpeg {stage}: {e}"))
    };
    // JPEG sides are 16-bit; the size rules, not the decoder, enforce the configured caps.
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder
        .decode_headers()
        .map_err(|e| undecodable("header", e))?;
    let (width, height) = decoder
        .dimensions()
        .and_then(|(w, h)| Some((u32::try_from(w).ok()?, u32::try_from(h).ok()?)))
        .ok_or_else(|| ImageReject::Undecodable("jpeg header: no dimensions".into()))?;
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    let header = Header::check(width, height, orientation, config)?;
    if !jpeg_has_end(bytes) {
        return Err(ImageReject::Undecodable(
            "truncated JPEG: no end-of-image marker after the last scan".into(),
        ));
    }
    use zune_core::colorspace::ColorSpace;
    let gray = match decoder.input_colorspace() {
        Some(ColorSpace::Luma) => true,
        Some(ColorSpace::YCbCr | ColorSpace::RGB) => false,
        _ => {
            decoder.set_options(decoder.options().jpeg_set_out_colorspace(ColorSpace::RGB));
            let pixels = decoder.decode().map_err(|e| undecodable("decode", e))?;
            let image = RgbImage::from_raw(width, height, pixels)
                .map(DynamicImage::ImageRgb8)
                .ok_or_else(|| {
                    ImageReject::Undecodable("jpeg decode: short pixel buffer".into())
                })?;
            return Ok(Decoded { image, header });
        }
    };
    let image = decode_jpeg_turbo(bytes, gray, header.target_w, header.target_h)
        .map_err(|e| ImageReject::Undecodable(format!("jpeg decode: {e}")))?;
    Ok(Decoded { image, header })
}

/// Most scans a progressive JPEG may have before libjpeg-turbo refuses it: a hostile file can
/// repeat a scan hundreds of times to make decoding slow. Encoders write a few dozen at most.
const JPEG_MAX_SCANS: u32 = 500;

/// Decodes YCbCr, RGB (`gray` false) or greyscale JPEG `bytes` with libjpeg-turbo, scaled down
/// by the largest of 1/2, 1/4 and 1/8 that keeps both sides at least `target_w` x `target_h`.
fn decode_jpeg_turbo(
    bytes: &[u8],
    gray: bool,
    target_w: u32,
    target_h: u32,
) -> Result<DynamicImage, String> {
    let failed = |e: turbojpeg::Error| e.to_string();
    let mut decompressor = turbojpeg::Decompressor::new().map_err(failed)?;
    decompressor
        .set_scan_limit(JPEG_MAX_SCANS)
        .map_err(failed)?;
    let full = decompressor.read_header(bytes).map_err(failed)?;
    let (target_w, target_h) = (target_w as usize, target_h as usize);
    let factor = [8, 4, 2]
        .into_iter()
        .map(|denom| turbojpeg::ScalingFactor::new(1, denom))
        .find(|f| f.scale(full.width) >= target_w && f.scale(full.height) >= target_h)
        .unwrap_or(turbojpeg::ScalingFactor::ONE);
    decompressor.set_scaling_factor(factor).map_err(failed)?;
    let scaled = full.scaled(factor);
    let (format, channels) = if gray {
        (turbojpeg::PixelFormat::GRAY, 1)
    } else {
        (turbojpeg::PixelFormat::RGB, 3)
    };
    let mut pixels = vec![0u8; scaled.width * scaled.height * channels];
    decompressor
        .decompress(
            bytes,
            turbojpeg::Image {
                pixels: pixels.as_mut_slice(),
                width: scaled.width,
                pitch: scaled.width * channels,
                height: scaled.height,
                format,
            },
        )
        .map_err(failed)?;
    // Sides are at most 65535 (JPEG's limit), so they fit u32.
    let (w, h) = (scaled.width as u32, scaled.height as u32);
    if gray {
        image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    }
    .ok_or_else(|| "short pixel buffer".to_owned())
}

/// Decoder limits: no side over `max_dimension`, and allocations bounded by the pixel cap at
/// 8 bytes a pixel (16-bit RGBA) plus 16 MiB of decoder state.
fn limits(config: &ImageConfig) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(config.max_dimension);
    limits.max_image_height = Some(config.max_dimension);
    limits.max_alloc = Some(config.max_pixels.saturating_mul(8).saturating_add(16 << 20));
    limits
}

fn image_error(format: SourceFormat, stage: &str, error: ImageError) -> ImageReject {
    let message = format!("{} {stage}: {error}", format.as_str());
    match error {
        ImageError::Limits(_) => ImageReject::TooManyPixels(message),
        _ => ImageReject::Undecodable(message),
    }
}

/// The size rules, on the header's (oriented) dimensions.
fn check_size(width: u32, height: u32, config: &ImageConfig) -> Result<(), ImageReject> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > config.max_pixels || width.max(height) > config.max_dimension {
        return Err(ImageReject::TooManyPixels(format!(
            "{width}x{height} = {pixels} pixels; at most {} pixels and {} a side are decoded",
            config.max_pixels, config.max_dimension
        )));
    }
    if width <= config.min_width || height <= config.min_height {
        return Err(ImageReject::TooSmall(format!(
            "{width}x{height}; width must be > {} and height > {}",
            config.min_width, config.min_height
        )));
    }
    Ok(())
}

/// Dimensions as displayed after `orientation`.
fn oriented(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
    match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    }
}

/// `true` when an end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA):
/// a JPEG cut short in its entropy-coded data has none (byte stuffing keeps both markers out of
/// scan data; an EXIF thumbnail's own markers come before the main image's scans).
/// `zune-jpeg` fills missing data with grey instead of failing, as browsers do, so this check is
/// what refuses truncated downloads. The search runs from the end, where EOI normally is.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let Some(eoi) = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]) else {
        return false;
    };
    !bytes[eoi..].windows(2).any(|w| w == [0xFF, 0xDA])
}

/// The size that fits `width` x `height` in a `max_side` square, aspect kept, never enlarged.
pub fn fit(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longer = width.max(height);
    if longer <= max_side {
        return (width, height);
    }
    let scale = |side: u32| {
        let scaled = (f64::from(side) * f64::from(max_side) / f64::from(longer)).round();
        (scaled as u32).clamp(1, max_side)
    };
    if width >= height {
        (max_side, scale(height))
    } else {
        (scale(width), max_side)
    }
}

/// Resizes `image` to `width` x `height` in its own 8-bit layout (alpha-weighted when it has
/// alpha), then converts to RGB with alpha flattened on white. Images with 16-bit or float
/// samples are first converted to 8 bits.
fn resize_to_rgb(image: DynamicImage, width: u32, height: u32) -> Result<RgbImage, ImageReject> {
    let (pixel_type, image) = match image {
        DynamicImage::ImageLuma8(_) => (fir::PixelType::U8, image),
        DynamicImage::ImageLumaA8(_) => (fir::PixelType::U8x2, image),
        DynamicImage::ImageRgb8(_) => (fir::PixelType::U8x3, image),
        DynamicImage::ImageRgba8(_) => (fir::PixelType::U8x4, image),
        other if other.color().has_alpha() => (
            fir::PixelType::U8x4,
            DynamicImage::ImageRgba8(other.to_rgba8()),
        ),
        other => (
            fir::PixelType::U8x3,
            DynamicImage::ImageRgb8(other.to_rgb8()),
        ),
    };
    let (src_w, src_h) = (image.width(), image.height());
    let pixels: Vec<u8> = if (src_w, src_h) == (width, height) {
        image.into_bytes()
    } else {
        let src = fir::images::ImageRef::new(src_w, src_h, image.as_bytes(), pixel_type)
            .map_err(|e| ImageReject::Undecodable(format!("resize: {e}")))?;
        let mut dst = fir::images::Image::new(width, height, pixel_type);
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom));
        fir::Resizer::new()
            .resize(&src, &mut dst, &options)
            .map_err(|e| ImageReject::Undecodable(format!("resize: {e}")))?;
        dst.into_vec()
    };
    let rgb: Vec<u8> = match pixel_type {
        fir::PixelType::U8 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        fir::PixelType::U8x2 => pixels
            .chunks_exact(2)
            .flat_map(|p| {
                let g = on_white(p[0], p[1]);
                [g, g, g]
            })
            .collect(),
        fir::PixelType::U8x4 => pixels
            .chunks_exact(4)
            .flat_map(|p| {
                [
                    on_white(p[0], p[3]),
                    on_white(p[1], p[3]),
                    on_white(p[2], p[3]),
                ]
            })
            .collect(),
        _ => pixels,
    };
    RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| ImageReject::Undecodable("resize: pixel buffer of the wrong size".into()))
}

/// One channel value with coverage `alpha`, composited over white.
fn on_white(value: u8, alpha: u8) -> u8 {
    let (v, a) = (u32::from(value), u32::from(alpha));
    ((v * a + 255 * (255 - a) + 127) / 255) as u8
}

fn apply_orientation(rgb: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return rgb;
    }
    let mut image = DynamicImage::ImageRgb8(rgb);
    image.apply_orientation(orientation);
    image.into_rgb8()
}

/// Baseline JFIF JPEG of `rgb` at `quality` (libjpeg's scale and tables) with libjpeg-turbo,
/// chroma 4:2:0 when `subsample`, else 4:4:4.
fn encode_jpeg(rgb: &RgbImage, quality: u8, subsample: bool) -> Result<Vec<u8>, ImageReject> {
    let (w, h) = rgb.dimensions();
    let failed =
        |e: turbojpeg::Error| ImageReject::Undecodable(format!("JPEG encode {w}x{h}: {e}"));
    let mut compressor = turbojpeg::Compressor::new().map_err(failed)?;
    compressor.set_quality(i32::from(quality)).map_err(failed)?;
    compressor
        .set_subsamp(if subsample {
            turbojpeg::Subsamp::Sub2x2
        } else {
            turbojpeg::Subsamp::None
        })
        .map_err(failed)?;
    compressor
        .compress_to_vec(turbojpeg::Image {
            pixels: rgb.as_raw().as_slice(),
            width: w as usize,
            pitch: 3 * w as usize,
            height: h as usize,
            format: turbojpeg::PixelFormat::RGB,
        })
        .map_err(failed)
}

/// Side of the square the perceptual hash is computed on.
const HASH_GRID: usize = 32;

/// DCT-II basis `cos((2x + 1) u pi / 64)` for the frequencies `u` = 1..=8 the hash keeps.
fn dct_basis() -> &'static [[f32; HASH_GRID]; 8] {
    static BASIS: OnceLock<[[f32; HASH_GRID]; 8]> = OnceLock::new();
    BASIS.get_or_init(|| {
        let mut basis = [[0.0; HASH_GRID]; 8];
        for (i, row) in basis.iter_mut().enumerate() {
            let u = (i + 1) as f64;
            for (x, value) in row.iter_mut().enumerate() {
                let angle =
                    (2.0 * x as f64 + 1.0) * u * std::f64::consts::PI / (2.0 * HASH_GRID as f64);
                *value = angle.cos() as f32;
            }
        }
        basis
    })
}

/// 64-bit DCT perceptual hash (pHash), as in pHash.org's `ph_dct_imagehash`:
///
/// 1. area-average the image down to 32x32 (aspect not kept) and take its luma
///    (0.299 R + 0.587 G + 0.114 B);
/// 2. 2-D DCT-II; keep the 8x8 lowest frequencies after the DC row and column (u, v in 1..=8),
///    which ignores overall brightness and is robust to rescaling, recompression and small
///    colour changes;
/// 3. bit `8 (u - 1) + (v - 1)` is set when that coefficient is above the median of the 64.
///
/// Compare hashes with [`hamming`]: re-encodings of one photo differ by a few bits, unrelated
/// photos by about 32.
pub fn phash(image: &RgbImage) -> u64 {
    let luma = grid_luma(image);
    let basis = dct_basis();
    // Rows first: row_freq[y][v] = sum_x luma[y][x] * basis[v][x].
    let mut row_freq = [[0.0f32; 8]; HASH_GRID];
    for (y, row) in luma.iter().enumerate() {
        for (v, b) in basis.iter().enumerate() {
            row_freq[y][v] = row.iter().zip(b).map(|(l, c)| l * c).sum();
        }
    }
    let mut coefficients = [0.0f32; 64];
    for (u, b) in basis.iter().enumerate() {
        for v in 0..8 {
            coefficients[u * 8 + v] = (0..HASH_GRID).map(|y| row_freq[y][v] * b[y]).sum();
        }
    }
    let mut sorted = coefficients;
    sorted.sort_unstable_by(f32::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    coefficients
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > median)
        .fold(0u64, |hash, (i, _)| hash | (1 << i))
}

/// The image area-averaged to a 32x32 grid of luma values: each pixel is counted in the cell its
/// position falls in; on an image narrower or lower than 32 pixels, empty cells repeat their
/// nearest pixel's cell.
fn grid_luma(image: &RgbImage) -> [[f32; HASH_GRID]; HASH_GRID] {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut luma = [[0.0f32; HASH_GRID]; HASH_GRID];
    if w == 0 || h == 0 {
        return luma;
    }
    // Cell gx covers the columns x with floor(32 x / w) = gx: x in start[gx]..start[gx + 1].
    let start: [usize; HASH_GRID + 1] = std::array::from_fn(|g| (g * w).div_ceil(HASH_GRID));
    let mut sums = [[[0u32; 3]; HASH_GRID]; HASH_GRID];
    let mut rows_in = [0u32; HASH_GRID];
    for (y, row) in image.as_raw().chunks_exact(w * 3).enumerate() {
        let gy = y * HASH_GRID / h;
        rows_in[gy] += 1;
        for (cell, span) in sums[gy].iter_mut().zip(start.windows(2)) {
            let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
            for p in row[span[0] * 3..span[1] * 3].chunks_exact(3) {
                r += u32::from(p[0]);
                g += u32::from(p[1]);
                b += u32::from(p[2]);
            }
            cell[0] += r;
            cell[1] += g;
            cell[2] += b;
        }
    }
    let cols_in: [u32; HASH_GRID] = std::array::from_fn(|g| (start[g + 1] - start[g]) as u32);
    for (gy, (out, cells)) in luma.iter_mut().zip(&sums).enumerate() {
        for (gx, (value, [r, g, b])) in out.iter_mut().zip(cells).enumerate() {
            let n = rows_in[gy] * cols_in[gx];
            if n > 0 {
                *value = (0.299 * *r as f32 + 0.587 * *g as f32 + 0.114 * *b as f32) / n as f32;
            }
        }
    }
    if w < HASH_GRID || h < HASH_GRID {
        let cell = |g: usize, side: usize| (g * side / HASH_GRID) * HASH_GRID / side;
        for gy in 0..HASH_GRID {
            for gx in 0..HASH_GRID {
                if rows_in[gy] * cols_in[gx] == 0 {
                    luma[gy][gx] = luma[cell(gy, h)][cell(gx, w)];
                }
            }
        }
    }
    luma
}

/// Number of differing bits between two perceptual hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Throughput of [`process`] on one source format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRow {
    /// Source format (`jpeg`, `png`, ...), or `all`.
    pub format: String,
    /// Photos of this format in the set.
    pub photos: usize,
    /// Mean size of those photos, bytes.
    pub mean_bytes: u64,
    /// Images processed (the photos, round after round).
    pub images: u64,
    /// Wall-clock seconds spent.
    pub wall_seconds: f64,
    /// CPU seconds this thread spent (Linux `/proc/thread-self/schedstat`); `None` elsewhere.
    /// On a busy machine this is the fairer figure: it excludes time other processes held the
    /// core.
    pub cpu_seconds: Option<f64>,
    /// `images / wall_seconds`.
    pub images_per_second: f64,
    /// `images / cpu_seconds`: images per second of one core.
    pub images_per_cpu_second: Option<f64>,
    /// Images per second of one core (CPU time where measured, else wall time) for the decode
    /// step alone: sniff, header checks and decoding at the scale [`process`] uses. No faster
    /// resize or encoder can lift [`process`] above this ceiling.
    pub decode_only_per_second: f64,
    /// Images decoded for [`BenchRow::decode_only_per_second`].
    pub decode_only_images: u64,
}

/// What [`bench()`] measured, one thread, per format and over all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The configuration's `max_side`.
    pub max_side: u32,
    /// One row per source format present, then a row `all`.
    pub rows: Vec<BenchRow>,
    /// Photos refused by [`process`] (not timed), with the reject code.
    pub refused: Vec<(usize, &'static str)>,
}

/// Times [`process`] (sniff, header, decode, filter, resize, encode, SHA-256, pHash) on this
/// thread over `photos` for about `seconds` in all, split evenly between the formats present,
/// then the decode step alone for half as long again ([`BenchRow::decode_only_per_second`]).
/// Photos that `process` refuses are listed in [`BenchReport::refused`] and left out.
pub fn bench(photos: &[Vec<u8>], config: &ImageConfig, seconds: f64) -> BenchReport {
    let mut groups: Vec<(SourceFormat, Vec<&[u8]>)> = Vec::new();
    let mut refused = Vec::new();
    for (index, photo) in photos.iter().enumerate() {
        match process(photo, None, config) {
            Ok(done) => match groups.iter_mut().find(|(f, _)| *f == done.format) {
                Some((_, group)) => group.push(photo),
                None => groups.push((done.format, vec![photo])),
            },
            Err(reject) => refused.push((index, reject.code())),
        }
    }
    let per_group = seconds / groups.len().max(1) as f64;
    // Per format: the photos, the timing of `process`, the timing of the decode step alone.
    let mut timed: Vec<(&str, Vec<&[u8]>, Timing, Timing)> = groups
        .iter()
        .map(|(format, group)| {
            // Refusals were sorted out before timing; the results only need to be computed.
            let whole = Timing::measure(group, per_group, |photo| {
                std::hint::black_box(process(photo, None, config).is_ok());
            });
            let decode_only = Timing::measure(group, per_group / 2.0, |photo| {
                std::hint::black_box(decode(photo, *format, config).is_ok());
            });
            (format.as_str(), group.clone(), whole, decode_only)
        })
        .collect();
    if !timed.is_empty() {
        let all = timed.iter().flat_map(|t| t.1.iter().copied()).collect();
        let whole = timed
            .iter()
            .map(|t| t.2)
            .fold(Timing::default(), Timing::plus);
        let decode_only = timed
            .iter()
            .map(|t| t.3)
            .fold(Timing::default(), Timing::plus);
        timed.push(("all", all, whole, decode_only));
    }
    BenchReport {
        max_side: config.max_side,
        rows: timed
            .iter()
            .map(|(format, group, whole, decode_only)| whole.row(format, group, decode_only))
            .collect(),
        refused,
    }
}

/// Images done and the time they took on this thread.
#[derive(Debug, Clone, Copy)]
struct Timing {
    images: u64,
    wall_seconds: f64,
    cpu_seconds: Option<f64>,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            images: 0,
            wall_seconds: 0.0,
            cpu_seconds: Some(0.0),
        }
    }
}

impl Timing {
    /// Runs `work` over `group`, round after round, for about `seconds` (one round at least).
    fn measure(group: &[&[u8]], seconds: f64, work: impl Fn(&[u8])) -> Self {
        let cpu_start = thread_cpu_seconds();
        let start = Instant::now();
        let mut images = 0u64;
        while images == 0 || start.elapsed().as_secs_f64() < seconds {
            for photo in group {
                work(photo);
                images += 1;
            }
        }
        Self {
            images,
            wall_seconds: start.elapsed().as_secs_f64(),
            cpu_seconds: thread_cpu_seconds()
                .zip(cpu_start)
                .map(|(end, begin)| end - begin),
        }
    }

    /// Both timings together.
    fn plus(self, other: Self) -> Self {
        Self {
            images: self.images + other.images,
            wall_seconds: self.wall_seconds + other.wall_seconds,
            cpu_seconds: self.cpu_seconds.zip(other.cpu_seconds).map(|(a, b)| a + b),
        }
    }

    /// Images per CPU second where measured, else per wall second.
    fn per_core_second(&self) -> f64 {
        self.images as f64 / self.cpu_seconds.unwrap_or(self.wall_seconds)
    }

    fn row(&self, format: &str, group: &[&[u8]], decode_only: &Timing) -> BenchRow {
        BenchRow {
            format: format.to_owned(),
            photos: group.len(),
            mean_bytes: group.iter().map(|p| p.len() as u64).sum::<u64>()
                / group.len().max(1) as u64,
            images: self.images,
            wall_seconds: self.wall_seconds,
            cpu_seconds: self.cpu_seconds,
            images_per_second: self.images as f64 / self.wall_seconds,
            images_per_cpu_second: self.cpu_seconds.map(|c| self.images as f64 / c),
            decode_only_per_second: decode_only.per_core_second(),
            decode_only_images: decode_only.images,
        }
    }
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat` (Linux).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}
