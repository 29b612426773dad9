//! The Karpathy-split JSON of the retrieval benchmarks (`dataset_coco.json`,
//! `dataset_flickr30k.json`): images, each with a split, a file name and its captions.
//!
//! Layout (only the fields read here; others are ignored):
//!
//! ```json
//! {"dataset": "coco",
//!  "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
//!              "split": "test", "sentences": [{"raw": "A man riding a bike.", "tokens": ["a", ...]}]}]}
//! ```
//!
//! `filepath` is absent in the Flickr30k file. An image's [`KarpathyImage::key`] is its file name:
//! `pipeline pack` uses it as the pair key, so the region rows `detector extract` writes for the
//! image carry it too, and the trainer joins captions and regions by it. File names must be unique
//! within one file (they are in both benchmarks).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{Result, SchemaError};

/// A split of the Karpathy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training images.
    Train,
    /// COCO's "rest of val2014": also used for training.
    Restval,
    /// Validation images.
    Val,
    /// Test images (Flickr30k 1k, COCO 5k).
    Test,
}

impl Split {
    /// Parses `train`, `restval`, `val` or `test`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "train" => Some(Self::Train),
            "restval" => Some(Self::Restval),
            "val" => Some(Self::Val),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

/// One image and its captions.
#[derive(Debug, Clone, PartialEq)]
pub struct KarpathyImage {
    /// Folder of the image relative to the image root (`val2014`), when the file gives one.
    pub filepath: Option<String>,
    /// File name of the image.
    pub filename: String,
    /// Which split it belongs to.
    pub split: Split,
    /// Its captions, as written (`raw`), in file order.
    pub captions: Vec<String>,
}

impl KarpathyImage {
    /// The key that joins the image with its pair and region rows: its file name.
    pub fn key(&self) -> &str {
        &self.filename
    }

    /// Path relative to the image root: `filepath/filename`, or `filename`.
    pub fn relative_path(&self) -> String {
        match &self.filepath {
            Some(folder) if !folder.is_empty() => format!("{folder}/{}", self.filename),
            _ => self.filename.clone(),
        }
    }
}

/// A whole Karpathy-split file.
#[derive(Debug, Clone, PartialEq)]
pub struct KarpathyDataset {
    /// The `dataset` field (`coco`, `flickr30k`), empty when absent.
    pub name: String,
    /// Every image, in file order.
    pub images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    dataset: String,
    images: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawImage {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    split: String,
    sentences: Vec<RawSentence>,
}

#[derive(Deserialize)]
struct RawSentence {
    raw: String,
}

impl KarpathyDataset {
    /// Parses the JSON in `bytes`; every error names `file` and, for a bad image, its index in
    /// `images` (the "row") and the field.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self> {
        let raw: RawFile = serde_json::from_slice(bytes).map_err(|source| SchemaError::Json {
            file: file.to_owned(),
            source,
        })?;
        let mut seen = HashSet::new();
        let mut images = Vec::with_capacity(raw.images.len());
        for (row, value) in raw.images.into_iter().enumerate() {
            let image: RawImage = serde_json::from_value(value)
                .map_err(|e| SchemaError::row(file, row, "images", e.to_string()))?;
            let split = Split::parse(&image.split).ok_or_else(|| {
                SchemaError::row(
                    file,
                    row,
                    "split",
                    format!("`{}` is not train, restval, val or test", image.split),
                )
            })?;
            if image.filename.is_empty() {
                return Err(SchemaError::row(file, row, "filename", "empty"));
            }
            if !seen.insert(image.filename.clone()) {
                return Err(SchemaError::row(
                    file,
                    row,
                    "filename",
                    format!("`{}` appears twice", image.filename),
                ));
            }
            let captions: Vec<String> = image
                .sentences
                .into_iter()
                .map(|s| s.raw.trim().to_owned())
                .collect();
            if captions.is_empty() || captions.iter().any(String::is_empty) {
                return Err(SchemaError::row(
                    file,
                    row,
                    "sentences",
                    "every image needs at least one non-empty sentence",
                ));
            }
            images.push(KarpathyImage {
                filepath: image.filepath,
                filename: image.filename,
                split,
                captions,
            });
        }
        Ok(Self {
            name: raw.dataset,
            images,
        })
    }

    /// The images in any of `splits`, in file order.
    pub fn split(&self, splits: &[Split]) -> Vec<&KarpathyImage> {
        self.images
            .iter()
            .filter(|image| splits.contains(&image.split))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COCO_LIKE: &str = r#"{"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "imgid": 0, "split": "test", "cocoid": 1,
         "sentids": [0, 1],
         "sentences": [{"raw": " A dog runs. ", "tokens": ["a", "dog"], "imgid": 0, "sentid": 0},
                       {"raw": "A brown dog.", "tokens": [], "imgid": 0, "sentid": 1}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "restval",
         "sentences": [{"raw": "Two cats."}]},
        {"filename": "c.jpg", "split": "train", "sentences": [{"raw": "A bus."}]}
    ]}"#;

    #[test]
    fn reads_images_splits_captions_and_paths() {
        let data = KarpathyDataset::parse("coco.json", COCO_LIKE.as_bytes()).unwrap();
        assert_eq!(data.name, "coco");
        assert_eq!(data.images.len(), 3);
        let first = &data.images[0];
        assert_eq!(first.captions, ["A dog runs.", "A brown dog."]);
        assert_eq!(first.relative_path(), "val2014/a.jpg");
        assert_eq!(first.key(), "a.jpg");
        assert_eq!(data.images[2].relative_path(), "c.jpg");
        let train: Vec<&str> = data
            .split(&[Split::Train, Split::Restval])
            .iter()
            .map(|i| i.key())
            .collect();
        assert_eq!(train, ["b.jpg", "c.jpg"]);
        assert_eq!(data.split(&[Split::Test]).len(), 1);
    }

    #[test]
    fn bad_images_are_named_by_file_row_and_field() {
        let cases = [
            (
                r#"{"images": [{"filename": "a.jpg", "split": "dev", "sentences": [{"raw": "x"}]}]}"#,
                "f.json: row 0, column `split`: `dev` is not",
            ),
            (
                r#"{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": "x"}]},
                               {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "y"}]}]}"#,
                "f.json: row 1, column `filename`: `a.jpg` appears twice",
            ),
            (
                r#"{"images": [{"filename": "a.jpg", "split": "test", "sentences": []}]}"#,
                "f.json: row 0, column `sentences`",
            ),
            (
                r#"{"images": [{"split": "test", "sentences": []}]}"#,
                "f.json: row 0, column `images`: missing field `filename`",
            ),
            (
                r#"{"pictures": []}"#,
                "f.json: json: missing field `images`",
            ),
        ];
        for (json, expected) in cases {
            let err = KarpathyDataset::parse("f.json", json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
    }
}
