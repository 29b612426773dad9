//! Image filtering and storage on the real photos under `assets/photos` and on images built here.

use std::io::Write;
use std::path::PathBuf;

use pipeline::imaging::{
    ImageConfig, ImageReject, SourceFormat, bench, fit, hamming, phash, process, sha256_hex,
};

fn photo_dirs() -> [PathBuf; 2] {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos"));
    [root.clone(), root.join("darknet")]
}

/// Every `.png` / `.jpg` photo, by file name, sorted.
fn photos() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in photo_dirs() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
            .collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read(&path).unwrap()));
        }
    }
    assert_eq!(out.len(), 20, "photo set changed");
    out
}

fn photo(name: &str) -> Vec<u8> {
    photos()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no photo {name}"))
        .1
}

fn png_bytes(image: &image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_bytes(rgb: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(rgb)
        .unwrap();
    out
}

/// A `width` x `height` RGB gradient: red along x, green along y.
fn gradient(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    })
}

fn reject(bytes: &[u8], content_type: Option<&str>, config: &ImageConfig) -> ImageReject {
    match process(bytes, content_type, config) {
        Ok(done) => panic!(
            "expected a reject, got a {}x{} image",
            done.width, done.height
        ),
        Err(reject) => reject,
    }
}

/// `sha256sum assets/photos/*.{png,jpg} assets/photos/darknet/*.jpg`, run when the test was
/// written.
const SHA256SUMS: [(&str, &str); 20] = [
    (
        "astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    (
        "camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    ),
    (
        "chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    (
        "coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    ),
    (
        "coins.png",
        "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    ),
    (
        "ihc.png",
        "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    ),
    (
        "motorcycle_left.png",
        "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    ),
    (
        "motorcycle_right.png",
        "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    ),
    (
        "china.jpg",
        "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
    ),
    (
        "flower.jpg",
        "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
    ),
    (
        "hubble_deep_field.jpg",
        "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    ),
    (
        "retina.jpg",
        "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    ),
    (
        "rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    ),
    (
        "dog.jpg",
        "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866",
    ),
    (
        "eagle.jpg",
        "f95f57297fd51a6c5ddceb5ed6916fa759d1d65f402fee34c05b31a9608755c0",
    ),
    (
        "giraffe.jpg",
        "00dc48a9b2af8a1fe4c4b79319726591f1033c7e1150f21e7577a79f3b6659f1",
    ),
    (
        "horses.jpg",
        "c8f0a677a1356569e2ce71d2fa88c1030c0ae57ecf5e14170e02d9a86a20dcb4",
    ),
    (
        "kite.jpg",
        "87410f52f79cc256c3949b48a3548632c07c8e9943468ef8caa6250f6643be8e",
    ),
    (
        "person.jpg",
        "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1",
    ),
    (
        "scream.jpg",
        "dcab7bae866fbb396e01ab27a9c8d2d40b3e80911dafb05a5fa18d1bac6b8d17",
    ),
];

#[test]
fn real_photos_are_stored_as_small_jpegs_with_their_aspect() {
    let config = ImageConfig::default();
    for (name, bytes) in photos() {
        if name == "chelsea.png" {
            continue; // 451x300: the boundary case of `chelsea_fails_the_strict_size_rule`
        }
        let done = process(&bytes, None, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = if name.ends_with(".png") {
            SourceFormat::Png
        } else {
            SourceFormat::Jpeg
        };
        assert_eq!(done.format, expected, "{name}");
        assert!(!done.content_type_mismatch, "{name}");
        assert!(done.width.max(done.height) <= 512, "{name}");
        assert_eq!(
            (done.width, done.height),
            fit(done.original_width, done.original_height, 512),
            "{name}"
        );
        let aspect_in = f64::from(done.original_width) / f64::from(done.original_height);
        let aspect_out = f64::from(done.width) / f64::from(done.height);
        assert!(
            (aspect_in - aspect_out).abs() / aspect_in < 0.01,
            "{name}: aspect {aspect_in} -> {aspect_out}"
        );
        let decoded = image::load_from_memory_with_format(&done.jpeg, image::ImageFormat::Jpeg)
            .unwrap_or_else(|e| panic!("{name}: stored JPEG does not decode: {e}"));
        assert_eq!(
            (decoded.width(), decoded.height()),
            (done.width, done.height)
        );
        assert_eq!(decoded.color(), image::ColorType::Rgb8, "{name}");
        assert_eq!(done.rgb.dimensions(), (done.width, done.height), "{name}");
        // The JPEG holds the returned pixels, at quality 90.
        let decoded = decoded.to_rgb8();
        let mse = decoded
            .as_raw()
            .iter()
            .zip(done.rgb.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            / decoded.as_raw().len() as f64;
        let psnr = 10.0 * (255.0f64.powi(2) / mse).log10();
        assert!(psnr > 24.0, "{name}: PSNR {psnr:.1} dB");
    }
}

#[test]
fn known_sizes_of_some_photos() {
    let config = ImageConfig::default();
    let cases = [
        ("astronaut.png", (512, 512), (512, 512)),
        ("china.jpg", (640, 427), (512, 342)),
        ("kite.jpg", (1352, 900), (512, 341)),
        ("retina.jpg", (1411, 1411), (512, 512)),
        ("scream.jpg", (352, 448), (352, 448)),
        ("coins.png", (384, 303), (384, 303)),
    ];
    for (name, original, stored) in cases {
        let done = process(&photo(name), Some("image/whatever"), &config).unwrap();
        assert_eq!(
            (done.original_width, done.original_height),
            original,
            "{name}"
        );
        assert_eq!((done.width, done.height), stored, "{name}");
    }
}

#[test]
fn chelsea_fails_the_strict_size_rule() {
    // LAIT keeps images with width AND height > 300; chelsea.png is 451x300.
    let r = reject(&photo("chelsea.png"), None, &ImageConfig::default());
    assert_eq!(r.code(), "too_small");
    assert!(r.is_drop());
    assert!(r.message().contains("451x300"), "{r}");
    let config = ImageConfig {
        min_height: 299,
        ..ImageConfig::default()
    };
    assert!(process(&photo("chelsea.png"), None, &config).is_ok());
}

#[test]
fn sha256_is_of_the_downloaded_bytes() {
    let config = ImageConfig::default();
    let photos = photos();
    for (name, sum) in SHA256SUMS {
        let bytes = &photos.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(sha256_hex(bytes), sum, "{name}");
        if name != "chelsea.png" {
            assert_eq!(process(bytes, None, &config).unwrap().sha256, sum, "{name}");
        }
    }
}

#[test]
fn small_images_are_too_small() {
    let config = ImageConfig::default();
    for (w, h) in [(1, 1), (200, 400), (400, 200), (300, 301), (301, 300)] {
        let bytes = png_bytes(&image::DynamicImage::new_rgb8(w, h));
        let r = reject(&bytes, Some("image/png"), &config);
        assert_eq!(r.code(), "too_small", "{w}x{h}: {r}");
        assert!(r.is_drop());
    }
    let bytes = png_bytes(&image::DynamicImage::new_rgb8(301, 301));
    let done = process(&bytes, Some("image/png"), &config).unwrap();
    assert_eq!((done.width, done.height), (301, 301));
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A PNG whose header announces `width` x `height` 8-bit RGB but whose only IDAT is a valid zlib
/// stream of 64 KiB of zeros (a few hundred bytes).
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zlib.write_all(&vec![0u8; 64 << 10]).unwrap();
    png_chunk(&mut out, b"IDAT", &zlib.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let config = ImageConfig::default();
    // 30000 a side: over max_dimension (image's Limits refuse it while reading the header).
    let bomb = bomb_png(30_000, 30_000);
    assert!(bomb.len() < 2_000, "{} bytes", bomb.len());
    let r = reject(&bomb, Some("image/png"), &config);
    assert_eq!(r.code(), "too_many_pixels", "{r}");
    assert!(!r.is_drop());
    // 10000 x 10000 = 100 Mpx: each side allowed, the pixel count is not.
    let r = reject(&bomb_png(10_000, 10_000), Some("image/png"), &config);
    assert_eq!(r.code(), "too_many_pixels", "{r}");
    assert!(r.message().contains("10000x10000"), "{r}");
    // The caps are configuration.
    let tight = ImageConfig {
        max_pixels: 1_000_000,
        ..ImageConfig::default()
    };
    assert_eq!(
        reject(&photo("kite.jpg"), None, &tight).code(),
        "too_many_pixels"
    );
}

#[test]
fn truncated_images_are_undecodable() {
    let config = ImageConfig::default();
    // JPEGs cut anywhere before their end-of-image marker, PNGs cut inside their image data.
    for (name, tail) in [
        ("china.jpg", 2),
        ("kite.jpg", 2),
        ("retina.jpg", 2),
        ("astronaut.png", 20),
        ("coins.png", 20),
    ] {
        let bytes = photo(name);
        for keep in [bytes.len() / 2, bytes.len() - tail] {
            let r = reject(&bytes[..keep], Some("image/jpeg"), &config);
            assert_eq!(r.code(), "undecodable", "{name} cut to {keep}: {r}");
            assert!(!r.is_drop());
        }
    }
    // A JPEG that stops right after its header.
    let r = reject(&photo("dog.jpg")[..2000], None, &config);
    assert_eq!(r.code(), "undecodable", "{r}");
}

#[test]
fn non_images_and_unaccepted_formats_are_format() {
    let config = ImageConfig::default();
    let html = b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>";
    let r = reject(html, Some("text/html; charset=utf-8"), &config);
    assert_eq!(r.code(), "format", "{r}");
    assert!(r.message().contains("<!DOCTYPE"), "{r}");
    assert_eq!(reject(b"", None, &config).code(), "format");
    let only_jpeg = ImageConfig {
        formats: vec![SourceFormat::Jpeg],
        ..ImageConfig::default()
    };
    let r = reject(&photo("coffee.png"), Some("image/png"), &only_jpeg);
    assert_eq!(r.code(), "format", "{r}");
    // TIFF is a format `image` recognises but the crawler does not take.
    let tiff = b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00";
    assert_eq!(reject(tiff, Some("image/tiff"), &config).code(), "format");
}

#[test]
fn content_type_policy() {
    let png = photo("coffee.png");
    let lenient = ImageConfig::default();
    // Mislabelled image types pass by default and are reported.
    let done = process(&png, Some("image/jpeg"), &lenient).unwrap();
    assert!(done.content_type_mismatch);
    assert_eq!(done.format, SourceFormat::Png);
    // Matching, generic and absent types are not mismatches.
    for declared in [
        Some("image/png"),
        Some("IMAGE/PNG; charset=binary"),
        Some("application/octet-stream"),
        Some(""),
        None,
    ] {
        let done = process(&png, declared, &lenient).unwrap();
        assert!(!done.content_type_mismatch, "{declared:?}");
    }
    // A non-image type is refused even when the bytes are an image.
    let r = reject(&png, Some("text/html"), &lenient);
    assert_eq!(r.code(), "content_type_mismatch", "{r}");
    assert!(!r.is_drop());
    // The strict policy refuses mislabelled image types too.
    let strict = ImageConfig {
        strict_content_type: true,
        ..ImageConfig::default()
    };
    let r = reject(&png, Some("image/jpeg"), &strict);
    assert_eq!(r.code(), "content_type_mismatch");
    assert!(
        r.message().contains("image/jpeg") && r.message().contains("png"),
        "{r}"
    );
    assert!(process(&png, Some("image/x-png"), &strict).is_ok());
}

#[test]
fn every_accepted_format_decodes() {
    let config = ImageConfig::default();
    let coffee = image::load_from_memory(&photo("coffee.png")).unwrap();
    // GIF quantises with NeuQuant, slow without optimisation: a smaller crop for it.
    let crop = coffee.crop_imm(0, 0, 330, 310);
    let cases = [
        (
            image::ImageFormat::Png,
            SourceFormat::Png,
            &coffee,
            (512, 341),
        ),
        (
            image::ImageFormat::Bmp,
            SourceFormat::Bmp,
            &coffee,
            (512, 341),
        ),
        (
            image::ImageFormat::WebP,
            SourceFormat::Webp,
            &coffee,
            (512, 341),
        ),
        (
            image::ImageFormat::Jpeg,
            SourceFormat::Jpeg,
            &coffee,
            (512, 341),
        ),
        (
            image::ImageFormat::Gif,
            SourceFormat::Gif,
            &crop,
            (330, 310),
        ),
    ];
    for (encode_as, format, source, stored) in cases {
        let mut bytes = std::io::Cursor::new(Vec::new());
        source.write_to(&mut bytes, encode_as).unwrap();
        let declared = format!("image/{}", format.as_str());
        let done = process(bytes.get_ref(), Some(&declared), &config)
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(done.format, format);
        assert!(!done.content_type_mismatch, "{format:?}");
        assert_eq!((done.width, done.height), stored, "{format:?}");
        assert!(
            hamming(done.phash, phash(&done.rgb)) == 0,
            "{format:?}: hash of the returned pixels"
        );
    }
}

#[test]
fn cmyk_and_progressive_jpegs_decode() {
    let config = ImageConfig::default();
    let (w, h) = (400u16, 320u16);
    // Pure red as C=0 M=255 Y=255 K=0, plain CMYK and Adobe YCCK.
    let cmyk: Vec<u8> = [0u8, 255, 255, 0].repeat(usize::from(w) * usize::from(h));
    for color in [
        jpeg_encoder::ColorType::Cmyk,
        jpeg_encoder::ColorType::CmykAsYcck,
    ] {
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(&cmyk, w, h, color)
            .unwrap();
        let done = process(&bytes, None, &config).unwrap();
        let [r, g, b] = done.rgb.get_pixel(10, 10).0;
        assert!(r > 240 && g < 15 && b < 15, "{color:?}: {r} {g} {b}");
    }
    // Progressive, decoded in full (640x427) and at half scale (1100x800).
    for (w, h) in [(640u16, 427u16), (1100, 800)] {
        let rgb = image::RgbImage::from_fn(u32::from(w), u32::from(h), |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        });
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 85);
        encoder.set_progressive(true);
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        encoder
            .encode(rgb.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let done = process(&bytes, None, &config).unwrap();
        assert_eq!(
            (done.original_width, done.original_height),
            (u32::from(w), u32::from(h))
        );
        assert_eq!(done.width, 512);
        let truncated = &bytes[..bytes.len() * 2 / 3];
        assert_eq!(reject(truncated, None, &config).code(), "undecodable");
    }
}

#[test]
fn jpegs_with_stray_bytes_before_a_marker_still_decode() {
    // "Corrupt JPEG data: extraneous bytes before marker" is a warning for libjpeg-turbo, and
    // browsers show such files. Garbage goes just before the end-of-image marker.
    let rgb = gradient(640, 427);
    let clean = jpeg_bytes(&rgb, 85);
    let mut flawed = clean[..clean.len() - 2].to_vec();
    flawed.extend_from_slice(&[0x12, 0x34, 0x56, 0xFF, 0xD9]);
    let config = ImageConfig::default();
    let done = process(&flawed, None, &config).unwrap();
    let reference = process(&clean, None, &config).unwrap();
    assert_eq!((done.width, done.height), (512, 342));
    assert!(hamming(done.phash, reference.phash) <= 2);
}

#[test]
fn progressive_jpegs_with_too_many_scans_are_refused() {
    // A hostile progressive JPEG repeats a scan to make decoding slow; over 500 scans is refused.
    let rgb = gradient(640, 427);
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 85);
    encoder.set_progressive(true);
    encoder
        .encode(rgb.as_raw(), 640, 427, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let config = ImageConfig::default();
    assert!(process(&bytes, None, &config).is_ok());
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let end = bytes.len() - 2;
    let mut hostile = bytes[..end].to_vec();
    for _ in 0..600 {
        hostile.extend_from_slice(&bytes[last_scan..end]);
    }
    hostile.extend_from_slice(&[0xFF, 0xD9]);
    let reject = reject(&hostile, None, &config);
    assert_eq!(reject.code(), "undecodable");
    assert!(reject.message().contains("scan"), "{}", reject.message());
}

#[test]
fn transparency_is_flattened_on_white() {
    // Left half transparent red, right half opaque blue, 400x320.
    let rgba = image::RgbaImage::from_fn(400, 320, |x, _| {
        if x < 200 {
            image::Rgba([255, 0, 0, 0])
        } else {
            image::Rgba([0, 0, 255, 255])
        }
    });
    let bytes = png_bytes(&image::DynamicImage::ImageRgba8(rgba));
    let done = process(&bytes, Some("image/png"), &ImageConfig::default()).unwrap();
    assert_eq!(done.rgb.get_pixel(10, 10).0, [255, 255, 255]);
    assert_eq!(done.rgb.get_pixel(390, 10).0, [0, 0, 255]);
}

#[test]
fn grayscale_photos_become_rgb() {
    let done = process(&photo("camera.png"), None, &ImageConfig::default()).unwrap();
    let p = done.rgb.get_pixel(100, 100).0;
    assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
}

/// A minimal big-endian TIFF/EXIF block holding only `Orientation` = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&value.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    tiff
}

#[test]
fn exif_orientation_is_applied() {
    // Stored 640x400 (landscape) with a bright top-left corner; EXIF 6 = rotate 90 clockwise.
    let rgb = image::RgbImage::from_fn(640, 400, |x, y| {
        if x < 100 && y < 100 {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([20, 40, 60])
        }
    });
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
    encoder.add_exif_metadata(&exif_orientation(6)).unwrap();
    encoder
        .encode(rgb.as_raw(), 640, 400, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let done = process(&bytes, Some("image/jpeg"), &ImageConfig::default()).unwrap();
    assert_eq!((done.original_width, done.original_height), (400, 640));
    assert_eq!((done.width, done.height), (320, 512));
    // Rotated clockwise, the bright corner is now top-right.
    assert!(done.rgb.get_pixel(300, 10).0[0] > 200);
    assert!(done.rgb.get_pixel(10, 10).0[0] < 60);
}

#[test]
fn large_jpegs_decode_at_reduced_scale_like_a_full_decode_and_resize() {
    // 2048x1363: libjpeg-turbo decodes it at 1/4 scale, 512x341, the stored size itself.
    let base = image::load_from_memory(&photo("kite.jpg"))
        .unwrap()
        .to_rgb8();
    let big = image::imageops::resize(&base, 2048, 1363, image::imageops::FilterType::Triangle);
    for (quality, subsampling) in [
        (85, jpeg_encoder::SamplingFactor::F_2_2),
        (100, jpeg_encoder::SamplingFactor::F_1_1),
    ] {
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, quality);
        encoder.set_sampling_factor(subsampling);
        encoder
            .encode(big.as_raw(), 2048, 1363, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let done = process(&bytes, None, &ImageConfig::default()).unwrap();
        assert_eq!((done.original_width, done.original_height), (2048, 1363));
        assert_eq!((done.width, done.height), (512, 341));
        // Reference: `image`'s own decoder in full, then a Catmull-Rom resize.
        let full = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let reference =
            image::imageops::resize(&full, 512, 341, image::imageops::FilterType::CatmullRom);
        assert!(hamming(done.phash, phash(&reference)) <= 2);
        let diff = done
            .rgb
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .sum::<i32>() as f64
            / done.rgb.as_raw().len() as f64;
        assert!(diff < 4.0, "quality {quality}: mean abs difference {diff}");
    }
}

#[test]
fn phash_survives_recompression_and_separates_different_photos() {
    let config = ImageConfig::default();
    let mut hashes = Vec::new();
    for (name, bytes) in photos() {
        if name == "chelsea.png" {
            continue;
        }
        let done = process(&bytes, None, &config).unwrap();
        // The same photo at 80% of its size (but above the minimum), quality 60.
        let original = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let (w, h) = original.dimensions();
        let scale = (0.8f64).max(310.0 / f64::from(w.min(h)));
        let smaller = image::imageops::resize(
            &original,
            (f64::from(w) * scale).round() as u32,
            (f64::from(h) * scale).round() as u32,
            image::imageops::FilterType::Triangle,
        );
        let again = process(&jpeg_bytes(&smaller, 60), None, &config).unwrap();
        let d = hamming(done.phash, again.phash);
        assert!(d <= 6, "{name}: re-encoded copy at distance {d}");
        assert_eq!(phash(&done.rgb), done.phash);
        hashes.push((name, done.phash));
    }
    // motorcycle_left/right are a stereo pair: one scene seen from two points a few centimetres
    // apart, a near-duplicate by design (8 bits apart when this test was written). They are
    // still further apart than any re-encoding (<= 6), so a dedup radius of 6 keeps both.
    let stereo = ["motorcycle_left.png", "motorcycle_right.png"];
    for (i, (a, ha)) in hashes.iter().enumerate() {
        for (b, hb) in &hashes[i + 1..] {
            let d = hamming(*ha, *hb);
            if stereo.contains(&a.as_str()) && stereo.contains(&b.as_str()) {
                assert!((7..=12).contains(&d), "stereo pair at distance {d}");
            } else {
                assert!(d > 10, "{a} and {b} at distance {d}");
            }
        }
    }
}

#[test]
fn fit_keeps_aspect_and_never_enlarges() {
    assert_eq!(fit(640, 427, 512), (512, 342));
    assert_eq!(fit(427, 640, 512), (342, 512));
    assert_eq!(fit(500, 500, 512), (500, 500));
    assert_eq!(fit(20_000, 301, 512), (512, 8));
    assert_eq!(fit(100_000, 1, 512), (512, 1));
}

#[test]
fn config_defaults_and_validation() {
    let config: ImageConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, ImageConfig::default());
    assert_eq!((config.min_width, config.min_height), (300, 300));
    assert_eq!((config.max_side, config.jpeg_quality), (512, 90));
    assert_eq!(config.formats, SourceFormat::ALL.to_vec());
    config.validate().unwrap();
    let config: ImageConfig =
        serde_json::from_str(r#"{"formats": ["jpeg", "webp"], "max_side": 384}"#).unwrap();
    assert_eq!(config.formats, [SourceFormat::Jpeg, SourceFormat::Webp]);
    assert!(serde_json::from_str::<ImageConfig>(r#"{"max_sides": 1}"#).is_err());
    assert!(serde_json::from_str::<ImageConfig>(r#"{"formats": ["tiff"]}"#).is_err());
    for bad in [
        ImageConfig {
            jpeg_quality: 0,
            ..ImageConfig::default()
        },
        ImageConfig {
            max_side: 70_000,
            ..ImageConfig::default()
        },
        ImageConfig {
            formats: vec![],
            ..ImageConfig::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn bench_reports_every_format() {
    let photos: Vec<Vec<u8>> = ["coins.png", "chelsea.png", "person.jpg"]
        .into_iter()
        .map(photo)
        .collect();
    let report = bench(&photos, &ImageConfig::default(), 0.05);
    let formats: Vec<&str> = report.rows.iter().map(|r| r.format.as_str()).collect();
    assert_eq!(formats, ["png", "jpeg", "all"]);
    assert_eq!(report.refused, [(1, "too_small")]); // chelsea.png
    let all = report.rows.last().unwrap();
    assert_eq!(all.photos, 2);
    assert!(all.images >= 2 && all.images_per_second > 0.0);
    assert!(all.decode_only_images >= 2 && all.decode_only_per_second > 0.0);
    assert_eq!(all.images, report.rows[0].images + report.rows[1].images);
}

/// `cargo test --release --test imaging -- --ignored --nocapture bench_real_photos`; seconds
/// per set from `IMAGING_BENCH_SECONDS` (default 20). Two sets: the photos as shipped (several
/// are dense: kite.jpg is 1.4 MB for 1352x900), and the same photos as a web server typically
/// sends them, re-encoded as quality-80 4:2:0 JPEGs at their own size.
#[test]
#[ignore = "benchmark: run in release mode on a quiet machine"]
fn bench_real_photos() {
    let seconds = std::env::var("IMAGING_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let photos: Vec<Vec<u8>> = photos().into_iter().map(|(_, b)| b).collect();
    let web: Vec<Vec<u8>> = photos
        .iter()
        .map(|bytes| {
            let rgb = image::load_from_memory(bytes).unwrap().to_rgb8();
            let mut out = Vec::new();
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, 80);
            encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
            let (w, h) = (rgb.width() as u16, rgb.height() as u16);
            encoder
                .encode(rgb.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
                .unwrap();
            out
        })
        .collect();
    for (set, photos) in [("as shipped", &photos), ("web quality-80 JPEG", &web)] {
        let report = bench(photos, &ImageConfig::default(), seconds);
        println!("{set}: {}", serde_json::to_string_pretty(&report).unwrap());
    }
}
