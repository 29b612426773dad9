//! Region-feature shard: one Parquet row per kept image of a pair shard (same `key`), with the
//! detector's boxes, classes and pooled region features. Written by `detector extract`, read by
//! `trainer`. Columns and units: `schemas/README.md`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, FixedSizeListBuilder, Float16Array, Float16Builder,
    Float32Array, Float32Builder, ListArray, ListBuilder, StringArray, StringBuilder, UInt32Array,
    UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use half::f16;
use parquet::file::reader::ChunkReader;

use crate::parquet_io::{self, ValidatedReader, WriteOptions, column, opt};
use crate::{Result, SchemaError, SchemaId};

/// Name and version of this format.
pub const ID: SchemaId = SchemaId {
    name: "region_features",
    version: 1,
};

/// Metadata key: length of one pooled feature vector.
pub const FEATURE_DIM_KEY: &str = "imagebert.feature_dim";
/// Metadata key: detector name (e.g. `centernet-mobilenetv3-coco`).
pub const DETECTOR_NAME_KEY: &str = "imagebert.detector.name";
/// Metadata key: detector version (weights package and version, or checkpoint hash).
pub const DETECTOR_VERSION_KEY: &str = "imagebert.detector.version";
/// Metadata key: number of object classes the detector predicts (the MOC head's size).
pub const NUM_CLASSES_KEY: &str = "imagebert.detector.num_classes";
/// Metadata key: number of attribute classes, absent for detectors without attributes.
pub const NUM_ATTRIBUTES_KEY: &str = "imagebert.detector.num_attributes";

/// File name of the region-feature shard that belongs to pair shard `pair_shard` (a file name):
/// `00042.parquet` -> `00042.regions.parquet`.
pub fn file_name_for(pair_shard: &str) -> String {
    let stem = pair_shard.strip_suffix(".parquet").unwrap_or(pair_shard);
    format!("{stem}.regions.parquet")
}

/// Which detector made a shard, and the shapes it produces. Stored in the file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorInfo {
    /// Detector name.
    pub name: String,
    /// Detector version: weights package and version, or checkpoint hash.
    pub version: String,
    /// Length of one pooled feature vector.
    pub feature_dim: usize,
    /// Number of object classes.
    pub num_classes: usize,
    /// Number of attribute classes, if the detector predicts attributes.
    pub num_attributes: Option<usize>,
}

impl DetectorInfo {
    fn metadata(&self) -> Vec<(String, String)> {
        let mut entries = vec![
            (FEATURE_DIM_KEY.to_owned(), self.feature_dim.to_string()),
            (DETECTOR_NAME_KEY.to_owned(), self.name.clone()),
            (DETECTOR_VERSION_KEY.to_owned(), self.version.clone()),
            (NUM_CLASSES_KEY.to_owned(), self.num_classes.to_string()),
        ];
        if let Some(n) = self.num_attributes {
            entries.push((NUM_ATTRIBUTES_KEY.to_owned(), n.to_string()));
        }
        entries
    }

    /// Reads the detector description from a file's key-value metadata.
    pub fn from_metadata(file: &str, metadata: &HashMap<String, String>) -> Result<Self> {
        let bad = |key: &str, reason: String| SchemaError::BadMetadata {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let text = |key: &str| {
            metadata
                .get(key)
                .cloned()
                .ok_or_else(|| bad(key, "missing".to_owned()))
        };
        let count = |key: &str, value: &str| {
            value
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(key, format!("`{value}` is not a positive integer")))
        };
        let num_attributes = match metadata.get(NUM_ATTRIBUTES_KEY) {
            Some(v) => Some(count(NUM_ATTRIBUTES_KEY, v)?),
            None => None,
        };
        Ok(Self {
            name: text(DETECTOR_NAME_KEY)?,
            version: text(DETECTOR_VERSION_KEY)?,
            feature_dim: count(FEATURE_DIM_KEY, &text(FEATURE_DIM_KEY)?)?,
            num_classes: count(NUM_CLASSES_KEY, &text(NUM_CLASSES_KEY)?)?,
            num_attributes,
        })
    }
}

/// Whether regions could be extracted for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionStatus {
    /// Regions were extracted (possibly zero boxes).
    Ok,
    /// The image could not be decoded or processed; `error_message` says why.
    Failed,
}

impl RegionStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionStatus::Ok => "ok",
            RegionStatus::Failed => "failed",
        }
    }

    /// Parses a `status` column value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ok" => Some(RegionStatus::Ok),
            "failed" => Some(RegionStatus::Failed),
            _ => None,
        }
    }
}

/// One row of a region-feature shard.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionRecord {
    /// The pair's key in the pair shard.
    pub key: String,
    /// Whether extraction succeeded.
    pub status: RegionStatus,
    /// Why extraction failed.
    pub error_message: Option<String>,
    /// Width and height in pixels of the image the boxes refer to.
    pub image_size: Option<(u32, u32)>,
    /// Boxes `(x1, y1, x2, y2)` in pixels of that image, by descending confidence.
    pub boxes: Vec<[f32; 4]>,
    /// Object class per box (index into the detector's class list).
    pub class_ids: Vec<u32>,
    /// Confidence of each box's class, 0..=1.
    pub class_scores: Vec<f32>,
    /// Attribute class per box, for detectors that predict attributes.
    pub attribute_ids: Option<Vec<u32>>,
    /// Confidence of each box's attribute.
    pub attribute_scores: Option<Vec<f32>>,
    /// Pooled features, `boxes.len() * feature_dim` values, one box after another.
    pub features: Vec<f16>,
}

impl RegionRecord {
    /// The paper's 5-d location feature per box:
    /// `(x1/W, y1/H, x2/W, y2/H, (x2-x1)(y2-y1)/(W*H))` (ImageBERT, section 3.2).
    pub fn normalized_boxes(&self) -> Vec<[f32; 5]> {
        let Some((w, h)) = self.image_size else {
            return Vec::new();
        };
        let (w, h) = (w.max(1) as f32, h.max(1) as f32);
        self.boxes
            .iter()
            .map(|&[x1, y1, x2, y2]| {
                [
                    x1 / w,
                    y1 / h,
                    x2 / w,
                    y2 / h,
                    (x2 - x1) * (y2 - y1) / (w * h),
                ]
            })
            .collect()
    }

    /// Checks that every per-box list has one entry per box and the features `feature_dim` each.
    fn check_lengths(&self, file: &str, row: usize, feature_dim: usize) -> Result<()> {
        use columns::*;
        let n = self.boxes.len();
        let wrong = |column: &str, len: usize, want: usize| {
            SchemaError::row(
                file,
                row,
                column,
                format!("{len} values for {n} boxes, expected {want}"),
            )
        };
        let per_box = [
            (CLASS_IDS, self.class_ids.len()),
            (CLASS_SCORES, self.class_scores.len()),
            (
                ATTRIBUTE_IDS,
                self.attribute_ids.as_ref().map_or(n, Vec::len),
            ),
            (
                ATTRIBUTE_SCORES,
                self.attribute_scores.as_ref().map_or(n, Vec::len),
            ),
        ];
        for (column, len) in per_box {
            if len != n {
                return Err(wrong(column, len, n));
            }
        }
        if self.features.len() != n * feature_dim {
            return Err(wrong(FEATURES, self.features.len(), n * feature_dim));
        }
        if n > 0 && self.image_size.is_none() {
            return Err(SchemaError::row(
                file,
                row,
                IMAGE_WIDTH,
                "boxes without an image size",
            ));
        }
        Ok(())
    }
}

/// Column names, in schema order.
pub mod columns {
    #![allow(missing_docs)]
    pub const KEY: &str = "key";
    pub const STATUS: &str = "status";
    pub const ERROR_MESSAGE: &str = "error_message";
    pub const IMAGE_WIDTH: &str = "image_width";
    pub const IMAGE_HEIGHT: &str = "image_height";
    pub const NUM_BOXES: &str = "num_boxes";
    pub const BOXES: &str = "boxes";
    pub const BOXES_5D: &str = "boxes_5d";
    pub const CLASS_IDS: &str = "class_ids";
    pub const CLASS_SCORES: &str = "class_scores";
    pub const ATTRIBUTE_IDS: &str = "attribute_ids";
    pub const ATTRIBUTE_SCORES: &str = "attribute_scores";
    pub const FEATURES: &str = "features";
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

fn fixed_f32(size: i32) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        size,
    )
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use columns::*;
    Arc::new(Schema::new(vec![
        Field::new(KEY, DataType::Utf8, false),
        Field::new(STATUS, DataType::Utf8, false),
        Field::new(ERROR_MESSAGE, DataType::Utf8, true),
        Field::new(IMAGE_WIDTH, DataType::UInt32, true),
        Field::new(IMAGE_HEIGHT, DataType::UInt32, true),
        Field::new(NUM_BOXES, DataType::UInt32, false),
        Field::new(BOXES, list_of(fixed_f32(4)), false),
        Field::new(BOXES_5D, list_of(fixed_f32(5)), false),
        Field::new(CLASS_IDS, list_of(DataType::UInt32), false),
        Field::new(CLASS_SCORES, list_of(DataType::Float32), false),
        Field::new(ATTRIBUTE_IDS, list_of(DataType::UInt32), true),
        Field::new(ATTRIBUTE_SCORES, list_of(DataType::Float32), true),
        Field::new(FEATURES, list_of(DataType::Float16), false),
    ]))
});

/// The Arrow schema of a region-feature shard (the feature length is in the metadata).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

fn boxes_column<const N: usize>(rows: impl Iterator<Item = Vec<[f32; N]>>) -> ArrayRef {
    let mut builder = ListBuilder::new(FixedSizeListBuilder::new(Float32Builder::new(), N as i32));
    for boxes in rows {
        for b in boxes {
            builder.values().values().append_slice(&b);
            builder.values().append(true);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn u32_lists<'a>(rows: impl Iterator<Item = Option<&'a [u32]>>) -> ArrayRef {
    let mut builder = ListBuilder::new(UInt32Builder::new());
    for row in rows {
        if let Some(values) = row {
            builder.values().append_slice(values);
        }
        builder.append(row.is_some());
    }
    Arc::new(builder.finish())
}

fn f32_lists<'a>(rows: impl Iterator<Item = Option<&'a [f32]>>) -> ArrayRef {
    let mut builder = ListBuilder::new(Float32Builder::new());
    for row in rows {
        if let Some(values) = row {
            builder.values().append_slice(values);
        }
        builder.append(row.is_some());
    }
    Arc::new(builder.finish())
}

/// Builds one record batch from `records`, checking that their lengths agree with `feature_dim`.
pub fn to_batch(file: &str, feature_dim: usize, records: &[RegionRecord]) -> Result<RecordBatch> {
    for (row, record) in records.iter().enumerate() {
        record.check_lengths(file, row, feature_dim)?;
    }
    let r = records;
    let mut keys = StringBuilder::new();
    let mut statuses = StringBuilder::new();
    let mut errors = StringBuilder::new();
    let (mut widths, mut heights, mut counts) = (
        UInt32Builder::new(),
        UInt32Builder::new(),
        UInt32Builder::new(),
    );
    let mut features = ListBuilder::new(Float16Builder::new());
    for rec in r {
        keys.append_value(&rec.key);
        statuses.append_value(rec.status.as_str());
        errors.append_option(rec.error_message.as_deref());
        widths.append_option(rec.image_size.map(|s| s.0));
        heights.append_option(rec.image_size.map(|s| s.1));
        counts.append_value(rec.boxes.len() as u32);
        features.values().append_slice(&rec.features);
        features.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(keys.finish()),
        Arc::new(statuses.finish()),
        Arc::new(errors.finish()),
        Arc::new(widths.finish()),
        Arc::new(heights.finish()),
        Arc::new(counts.finish()),
        boxes_column(r.iter().map(|x| x.boxes.clone())),
        boxes_column(r.iter().map(RegionRecord::normalized_boxes)),
        u32_lists(r.iter().map(|x| Some(x.class_ids.as_slice()))),
        f32_lists(r.iter().map(|x| Some(x.class_scores.as_slice()))),
        u32_lists(r.iter().map(|x| x.attribute_ids.as_deref())),
        f32_lists(r.iter().map(|x| x.attribute_scores.as_deref())),
        Arc::new(features.finish()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| SchemaError::arrow(file, e))
}

/// The values of list row `i` as a typed array slice.
fn list_row<T: Array + Clone + 'static>(list: &ListArray, i: usize) -> Option<T> {
    list.is_valid(i)
        .then(|| list.value(i).as_any().downcast_ref::<T>().cloned())
        .flatten()
}

fn boxes_row<const N: usize>(list: &ListArray, i: usize) -> Vec<[f32; N]> {
    let Some(fixed) = list_row::<FixedSizeListArray>(list, i) else {
        return Vec::new();
    };
    let Some(values) = fixed.values().as_any().downcast_ref::<Float32Array>() else {
        return Vec::new();
    };
    // `value(i)` of a list slices the child array, so box `b` starts at `b * N`.
    let values = values.values();
    (0..fixed.len())
        .map(|b| std::array::from_fn(|k| values[b * N + k]))
        .collect()
}

/// Reads the records of `batch`, whose first row is row `first_row` of `file`.
pub fn from_batch(
    file: &str,
    first_row: usize,
    feature_dim: usize,
    batch: &RecordBatch,
) -> Result<Vec<RegionRecord>> {
    use columns::*;
    let key = column::<StringArray>(file, batch, KEY)?;
    let status = column::<StringArray>(file, batch, STATUS)?;
    let error = column::<StringArray>(file, batch, ERROR_MESSAGE)?;
    let width = column::<UInt32Array>(file, batch, IMAGE_WIDTH)?;
    let height = column::<UInt32Array>(file, batch, IMAGE_HEIGHT)?;
    let num_boxes = column::<UInt32Array>(file, batch, NUM_BOXES)?;
    let list = |name| column::<ListArray>(file, batch, name);
    let (boxes, class_ids, class_scores) = (list(BOXES)?, list(CLASS_IDS)?, list(CLASS_SCORES)?);
    let (attribute_ids, attribute_scores) = (list(ATTRIBUTE_IDS)?, list(ATTRIBUTE_SCORES)?);
    let features = list(FEATURES)?;
    let u32s = |l: &ListArray, i| list_row::<UInt32Array>(l, i).map(|a| a.values().to_vec());
    let f32s = |l: &ListArray, i| list_row::<Float32Array>(l, i).map(|a| a.values().to_vec());
    (0..batch.num_rows())
        .map(|i| {
            let row = first_row + i;
            let status = RegionStatus::parse(status.value(i)).ok_or_else(|| {
                SchemaError::row(
                    file,
                    row,
                    STATUS,
                    format!("unknown status `{}`", status.value(i)),
                )
            })?;
            let image_size = match (opt(width, i), opt(height, i)) {
                (Some(_), Some(_)) => Some((width.value(i), height.value(i))),
                _ => None,
            };
            let record = RegionRecord {
                key: key.value(i).to_owned(),
                status,
                error_message: opt(error, i).map(|i| error.value(i).to_owned()),
                image_size,
                boxes: boxes_row::<4>(boxes, i),
                class_ids: u32s(class_ids, i).unwrap_or_default(),
                class_scores: f32s(class_scores, i).unwrap_or_default(),
                attribute_ids: u32s(attribute_ids, i),
                attribute_scores: f32s(attribute_scores, i),
                features: list_row::<Float16Array>(features, i)
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default(),
            };
            if record.boxes.len() != num_boxes.value(i) as usize {
                return Err(SchemaError::row(
                    file,
                    row,
                    NUM_BOXES,
                    format!(
                        "says {} boxes, `boxes` holds {}",
                        num_boxes.value(i),
                        record.boxes.len()
                    ),
                ));
            }
            record.check_lengths(file, row, feature_dim)?;
            Ok(record)
        })
        .collect()
}

/// Writes `records` as a region-feature shard made by `detector` into `out` and returns `out`.
pub fn write<W: Write + Send>(
    file: &str,
    out: W,
    detector: &DetectorInfo,
    records: &[RegionRecord],
) -> Result<W> {
    let options = WriteOptions {
        row_group_rows: 256,
        metadata: detector.metadata(),
        ..WriteOptions::default()
    };
    let batches: Vec<RecordBatch> = records
        .chunks(options.row_group_rows)
        .map(|chunk| to_batch(file, detector.feature_dim, chunk))
        .collect::<Result<_>>()?;
    parquet_io::write(file, out, ID, &schema(), &options, &batches)
}

/// A region-feature shard opened for streaming, with the detector that made it.
pub struct RegionReader {
    /// The detector description from the file's metadata.
    pub detector: DetectorInfo,
    /// The validated batch stream.
    pub batches: ValidatedReader,
}

impl RegionReader {
    /// Opens a region-feature shard, refusing a file of another schema or version.
    pub fn open<R: ChunkReader + 'static>(file: &str, input: R) -> Result<Self> {
        let batches = ValidatedReader::open(file, input, ID, &schema(), 256)?;
        let detector = DetectorInfo::from_metadata(file, batches.metadata())?;
        Ok(Self { detector, batches })
    }

    /// Reads every remaining record.
    pub fn read_all(mut self) -> Result<(DetectorInfo, Vec<RegionRecord>)> {
        let mut records = Vec::with_capacity(self.batches.num_rows());
        while let Some(batch) = self.batches.next_batch() {
            let (first_row, batch) = batch?;
            records.extend(from_batch(
                self.batches.file(),
                first_row,
                self.detector.feature_dim,
                &batch,
            )?);
        }
        Ok((self.detector, records))
    }
}
