//! Retrieval data: a Karpathy-split JSON ([`schemas::karpathy`]) joined by key (the image's file
//! name) with the region-feature shards `detector extract` wrote for its images.
//!
//! # Pointing the tool at the real benchmarks
//!
//! 1. `pipeline pack --karpathy dataset_coco.json --images /data/coco --output DIR` writes pair
//!    shards whose keys are the images' file names (Flickr30k: `dataset_flickr30k.json` and its
//!    `flickr30k-images` folder).
//! 2. `detector extract --input DIR` writes `NNNNN.regions.parquet` beside them.
//! 3. `trainer finetune` / `trainer eval` take the JSON (`karpathy`) and `DIR` (`features`).
//!
//! Every image of the chosen splits must have an `ok` region row with at least one box: an image
//! without one is refused, naming it, since a benchmark with images left out is not the benchmark.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use schemas::karpathy::{KarpathyDataset, Split};
use schemas::region_features::{DetectorInfo, RegionReader, RegionStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::Location;

use crate::data::{DataLimits, Regions, check_detector};
use crate::model::imagebert::ImageBertInput;
use wordpiece::WordPiece;

/// Suffix of the region-feature shards `detector extract` writes.
const REGION_SHARD_SUFFIX: &str = ".regions.parquet";

/// Where a retrieval set comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalSource {
    /// The Karpathy-split JSON: a local path or `s3://`, `gs://`, `az://`, `file://` URI.
    pub karpathy: String,
    /// The folder (or object-storage prefix) holding the region-feature shards of its images.
    pub features: String,
    /// The splits to use (`test` for evaluation; `train` and `restval` for fine-tuning).
    pub splits: Vec<Split>,
}

/// One image of the set.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalImage {
    /// Its key (file name).
    pub key: String,
    /// Its regions, cut to the limit.
    pub regions: Regions,
}

/// One caption of the set.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalCaption {
    /// Index of the image it describes in [`RetrievalSet::images`].
    pub image: usize,
    /// `[CLS] caption [SEP]` WordPiece ids.
    pub text_ids: Vec<u32>,
}

/// Images with their regions and captions, in the JSON's order.
#[derive(Debug, Clone)]
pub struct RetrievalSet {
    /// The detector that made the regions.
    pub detector: DetectorInfo,
    /// The images.
    pub images: Vec<RetrievalImage>,
    /// Every caption of every image, image after image.
    pub captions: Vec<RetrievalCaption>,
    /// SHA-256 of the JSON file and the region shards' names, to tell one set from another.
    pub digest: String,
}

/// Reads a whole file given as a local path or a URI.
pub fn read_file(uri: &str) -> Result<bytes::Bytes> {
    let (folder, name) = match uri.rsplit_once('/') {
        Some((folder, name)) if !name.is_empty() => {
            (if folder.is_empty() { "/" } else { folder }, name)
        }
        _ => (".", uri),
    };
    Location::parse(folder)?
        .get_blocking(name)
        .with_context(|| format!("reading {uri}"))
}

impl RetrievalSet {
    /// Loads the images of `source.splits` and their captions, and joins them with the region
    /// rows in `source.features`.
    pub fn load(
        source: &RetrievalSource,
        tokenizer: &WordPiece,
        limits: &DataLimits,
    ) -> Result<Self> {
        ensure!(!source.splits.is_empty(), "no split chosen");
        let json = read_file(&source.karpathy)?;
        let dataset = KarpathyDataset::parse(&source.karpathy, &json)?;
        let wanted = dataset.split(&source.splits);
        ensure!(
            !wanted.is_empty(),
            "{} has no image in splits {:?}",
            source.karpathy,
            source.splits
        );
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for (index, image) in wanted.iter().enumerate() {
            by_key.insert(image.key(), index);
        }

        let location = Location::parse(&source.features)?;
        let mut names: Vec<String> = location
            .list_blocking()
            .with_context(|| format!("listing {}", source.features))?
            .into_iter()
            .filter(|name| name.ends_with(REGION_SHARD_SUFFIX))
            .collect();
        names.sort();
        ensure!(
            !names.is_empty(),
            "{} holds no region-feature shards (*{REGION_SHARD_SUFFIX}): run `detector extract` on the packed images",
            source.features
        );
        let mut digest = Sha256::new();
        digest.update(&json);
        let mut regions: Vec<Option<Regions>> = vec![None; wanted.len()];
        let mut detector: Option<(DetectorInfo, String)> = None;
        for name in &names {
            digest.update(name.as_bytes());
            let uri = location.uri_of(name);
            let bytes = location
                .get_blocking(name)
                .with_context(|| format!("reading region-feature shard {uri}"))?;
            let (found, rows) = RegionReader::open(&uri, bytes)?.read_all()?;
            match &detector {
                Some((expected, file)) => check_detector(expected, file, &found, &uri)?,
                None => detector = Some((found.clone(), uri.clone())),
            }
            for record in rows {
                let Some(&index) = by_key.get(record.key.as_str()) else {
                    continue;
                };
                if record.status != RegionStatus::Ok || record.boxes.is_empty() {
                    continue;
                }
                if regions[index].is_some() {
                    bail!("{uri}: key `{}` has region rows in two shards", record.key);
                }
                regions[index] =
                    Some(Regions::first(record, limits.max_regions, found.feature_dim).0);
            }
        }
        let (detector, _) = detector.expect("at least one shard was read");
        let mut images = Vec::with_capacity(wanted.len());
        let mut captions = Vec::new();
        for (index, (image, regions)) in wanted.iter().zip(regions).enumerate() {
            let Some(regions) = regions else {
                bail!(
                    "image `{}` of {} has no region row with status ok in {}: run `detector extract` (or check its error in the region shard)",
                    image.key(),
                    source.karpathy,
                    source.features
                );
            };
            images.push(RetrievalImage {
                key: image.key().to_owned(),
                regions,
            });
            for caption in &image.captions {
                captions.push(RetrievalCaption {
                    image: index,
                    text_ids: tokenizer.encode(caption, limits.max_text_len),
                });
            }
        }
        Ok(Self {
            detector,
            images,
            captions,
            digest: format!("{:x}", digest.finalize()),
        })
    }

    /// For every caption, the index of its image.
    pub fn caption_images(&self) -> Vec<usize> {
        self.captions.iter().map(|c| c.image).collect()
    }

    /// The images in `images` and their captions, re-indexed from 0 (a fold of COCO 1k).
    pub fn fold(&self, images: Range<usize>) -> RetrievalSet {
        let start = images.start;
        RetrievalSet {
            detector: self.detector.clone(),
            images: self.images[images.clone()].to_vec(),
            captions: self
                .captions
                .iter()
                .filter(|c| images.contains(&c.image))
                .map(|c| RetrievalCaption {
                    image: c.image - start,
                    text_ids: c.text_ids.clone(),
                })
                .collect(),
            digest: self.digest.clone(),
        }
    }

    /// Model input for `(image, caption)` index pairs, padded to the longest caption and the
    /// most regions among them.
    pub fn pair_input<B: Backend>(
        &self,
        pairs: &[(usize, usize)],
        pad_id: u32,
        device: &B::Device,
    ) -> ImageBertInput<B> {
        let text = self.text_input::<B>(pairs.iter().map(|p| p.1), pad_id, 0, device);
        let regions = self.region_input::<B>(pairs.iter().map(|p| p.0), 0, device);
        ImageBertInput {
            text_ids: text.ids,
            text_mask: text.mask,
            region_features: regions.features,
            region_boxes: regions.boxes,
            region_mask: regions.mask,
        }
    }

    /// Token ids and mask of `captions` (indices), one row each, padded to the longest of them
    /// or to `at_least` tokens when that is more.
    pub fn text_input<B: Backend>(
        &self,
        captions: impl ExactSizeIterator<Item = usize> + Clone,
        pad_id: u32,
        at_least: usize,
        device: &B::Device,
    ) -> TextInput<B> {
        let batch = captions.len();
        let text_len = captions
            .clone()
            .map(|c| self.captions[c].text_ids.len())
            .max()
            .unwrap_or(0)
            .max(at_least);
        let mut ids = vec![i64::from(pad_id); batch * text_len];
        let mut mask = vec![0.0f32; batch * text_len];
        for (row, c) in captions.enumerate() {
            for (t, &id) in self.captions[c].text_ids.iter().enumerate() {
                ids[row * text_len + t] = i64::from(id);
                mask[row * text_len + t] = 1.0;
            }
        }
        TextInput {
            ids: Tensor::from_data(TensorData::new(ids, [batch, text_len]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, text_len]), device),
        }
    }

    /// Region features, boxes and mask of `images` (indices), one row each, padded to the most
    /// regions among them or to `at_least` regions when that is more.
    pub fn region_input<B: Backend>(
        &self,
        images: impl ExactSizeIterator<Item = usize> + Clone,
        at_least: usize,
        device: &B::Device,
    ) -> RegionInput<B> {
        let batch = images.len();
        let dim = self.detector.feature_dim;
        let regions = images
            .clone()
            .map(|i| self.images[i].regions.len())
            .max()
            .unwrap_or(0)
            .max(at_least);
        let mut features = vec![0.0f32; batch * regions * dim];
        let mut boxes = vec![0.0f32; batch * regions * 5];
        let mut mask = vec![0.0f32; batch * regions];
        for (row, i) in images.enumerate() {
            let image = &self.images[i].regions;
            let f0 = row * regions * dim;
            for (slot, value) in features[f0..f0 + image.features.len()]
                .iter_mut()
                .zip(&image.features)
            {
                *slot = value.to_f32();
            }
            for (r, b) in image.boxes.iter().enumerate() {
                let slot = row * regions + r;
                boxes[slot * 5..slot * 5 + 5].copy_from_slice(b);
                mask[slot] = 1.0;
            }
        }
        RegionInput {
            features: Tensor::from_data(TensorData::new(features, [batch, regions, dim]), device),
            boxes: Tensor::from_data(TensorData::new(boxes, [batch, regions, 5]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, regions]), device),
        }
    }
}

/// The text half of a batch: `[batch, text_len]` token ids and mask (1 for real tokens).
pub struct TextInput<B: Backend> {
    /// Token ids.
    pub ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Tensor<B, 2>,
}

/// The image half of a batch: `[batch, regions, dim]` features, `[batch, regions, 5]` boxes and
/// the `[batch, regions]` mask (1 for real regions).
pub struct RegionInput<B: Backend> {
    /// Pooled region features.
    pub features: Tensor<B, 3>,
    /// Normalised boxes and area.
    pub boxes: Tensor<B, 3>,
    /// 1 for real regions, 0 for padding.
    pub mask: Tensor<B, 2>,
}
