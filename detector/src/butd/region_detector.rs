//! The BUTD detector as a [`RegionDetector`] for `detector extract`: the PIL-bilinear resize runs
//! on the decoding threads ([`ButdResize`]), the network on the device; every region keeps its
//! object class, attribute and 2048-d feature.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use schemas::region_features::DetectorInfo;

use super::{ButdConfig, ButdDetector, ButdImage, preprocess};
use crate::regions::{Prepared, Preprocess, RegionDetector, Regions, RgbImage};

/// Name stored in region shards made by this detector.
pub const DETECTOR_NAME: &str = "butd-resnet101-c4-vg";

/// Host-side preprocessing: the shortest-side resize of [`ButdDetector::resize`]. The resized
/// RGB bytes travel as floats (exactly) in [`Prepared::data`].
#[derive(Debug, Clone, Copy)]
pub struct ButdResize {
    min_size: usize,
    max_size: usize,
}

impl Preprocess for ButdResize {
    fn prepare(&self, image: &RgbImage) -> Result<Prepared> {
        let original = ButdImage::new(
            image.width as usize,
            image.height as usize,
            image.pixels.clone(),
        )?;
        let (height, width) = preprocess::resized_size(
            original.height(),
            original.width(),
            self.min_size,
            self.max_size,
        );
        let resized = original.resize_bilinear(width, height);
        Ok(Prepared {
            original_width: image.width,
            original_height: image.height,
            input_width: width as u32,
            input_height: height as u32,
            data: resized.rgb().iter().map(|&v| f32::from(v)).collect(),
        })
    }
}

/// [`ButdDetector`] behind the [`RegionDetector`] interface.
pub struct ButdRegionDetector<B: Backend> {
    detector: ButdDetector<B>,
    version: String,
}

impl<B: Backend> ButdRegionDetector<B> {
    /// Loads a converted checkpoint (`tools/butd_to_safetensors.py`); the shard metadata records
    /// its SHA-256 as the detector version.
    pub fn load(checkpoint: &Path, config: ButdConfig, device: &B::Device) -> Result<Self> {
        let detector = ButdDetector::load(checkpoint, config, device)
            .with_context(|| format!("loading BUTD checkpoint {}", checkpoint.display()))?;
        let version = crate::file_digest(&[checkpoint])?;
        Ok(Self { detector, version })
    }
}

impl<B: Backend> RegionDetector for ButdRegionDetector<B> {
    fn info(&self) -> DetectorInfo {
        let config = self.detector.config();
        DetectorInfo {
            name: DETECTOR_NAME.to_owned(),
            version: self.version.clone(),
            feature_dim: config.feature_dim(),
            num_classes: config.num_classes,
            num_attributes: Some(config.num_attributes),
        }
    }

    fn preprocessor(&self) -> Arc<dyn Preprocess> {
        let config = self.detector.config();
        Arc::new(ButdResize {
            min_size: config.min_size,
            max_size: config.max_size,
        })
    }

    fn detect(&mut self, batch: Vec<Prepared>) -> Result<Vec<Regions>> {
        batch
            .into_iter()
            .map(|prepared| {
                let rgb = prepared.data.iter().map(|&v| v as u8).collect();
                let resized = ButdImage::new(
                    prepared.input_width as usize,
                    prepared.input_height as usize,
                    rgb,
                )?;
                let (found, _) = self.detector.detect_resized(
                    resized,
                    prepared.original_width as usize,
                    prepared.original_height as usize,
                );
                Ok(Regions {
                    boxes: found.boxes,
                    class_ids: found.class_ids,
                    class_scores: found.class_scores,
                    attribute_ids: Some(found.attribute_ids),
                    attribute_scores: Some(found.attribute_scores),
                    features: found.features,
                })
            })
            .collect()
    }
}
