//! `detector bench`: throughput of the default detector on the real photos of the assets.
//!
//! Measures, for each batch size asked for: images/s of the device part (`detect`: forward pass,
//! decode, region selection and RoIAlign pooling, features back on the host) after one warm-up
//! batch, and images/s per core of the host part (decode + resize to the model input), which
//! `detector extract` runs on rayon threads alongside the device. Prints figures; asserts nothing.
//! Run in release mode.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::regions::{Prepared, RegionDetector, decode_rgb};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Batch size, for device figures.
    pub batch_size: Option<usize>,
    /// Images per second.
    pub images_per_second: f64,
    /// Images processed while measuring.
    pub images: usize,
}

/// Reads every JPEG and PNG under `folder` (recursively), sorted by path.
pub fn read_photos(folder: &Path) -> Result<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("jpg" | "jpeg" | "png")
            ) {
                paths.push(path);
            }
        }
    }
    paths.sort();
    ensure!(!paths.is_empty(), "no photos under {}", folder.display());
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// Measures `detector` on `photos` for about `seconds` per figure.
pub fn run(
    detector: &mut dyn RegionDetector,
    photos: &[Vec<u8>],
    batch_sizes: &[usize],
    seconds: f64,
) -> Result<Vec<Figure>> {
    let budget = Duration::from_secs_f64(seconds);
    let preprocess = detector.preprocessor();
    let mut prepared: Vec<Prepared> = Vec::new();
    let start = Instant::now();
    let mut host_images = 0;
    while prepared.len() < photos.len() || start.elapsed() < budget {
        let bytes = &photos[host_images % photos.len()];
        let image = decode_rgb(bytes, u64::MAX)?;
        let input = preprocess.prepare(&image)?;
        if prepared.len() < photos.len() {
            prepared.push(input);
        }
        host_images += 1;
    }
    let mut figures = vec![Figure {
        name: "host: decode + resize, one core".to_owned(),
        batch_size: None,
        images_per_second: host_images as f64 / start.elapsed().as_secs_f64(),
        images: host_images,
    }];
    for &batch_size in batch_sizes {
        ensure!(batch_size > 0, "batch sizes must be at least 1");
        let batch = |k: usize| -> Vec<Prepared> {
            (0..batch_size)
                .map(|i| prepared[(k * batch_size + i) % prepared.len()].clone())
                .collect()
        };
        detector.detect(batch(0))?; // warm-up: first-call compilation and allocation
        let start = Instant::now();
        let mut batches = 0;
        while batches == 0 || start.elapsed() < budget {
            detector.detect(batch(batches + 1))?;
            batches += 1;
        }
        figures.push(Figure {
            name: format!("device: detect ({})", backend::BACKEND_NAME),
            batch_size: Some(batch_size),
            images_per_second: (batches * batch_size) as f64 / start.elapsed().as_secs_f64(),
            images: batches * batch_size,
        });
    }
    Ok(figures)
}
