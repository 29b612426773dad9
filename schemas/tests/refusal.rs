//! Files of another schema, another version, or with broken columns or rows are refused with an
//! error that names the file and the column (and row, where one is at fault).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use half::f16;
use schemas::manifest::DatasetManifest;
use schemas::pair_shard::{self, PairRecord, Status};
use schemas::parquet_io::{self, WriteOptions};
use schemas::region_features::{self, DetectorInfo, RegionReader, RegionRecord, RegionStatus};
use schemas::shard_stats::ShardStats;
use schemas::{SchemaError, SchemaId};

fn record() -> PairRecord {
    PairRecord {
        text: Some("a dog".into()),
        width: Some(400),
        height: Some(400),
        source_offset: Some(0),
        ..PairRecord::new(
            "000000000",
            "http://127.0.0.1/a.jpg",
            Status::Kept,
            "list.csv",
        )
    }
}

/// Writes `batch` as a Parquet file tagged with `id`.
fn file_with(id: SchemaId, batch: &RecordBatch) -> Bytes {
    let out = parquet_io::write(
        "t",
        Vec::new(),
        id,
        &batch.schema(),
        &WriteOptions::default(),
        std::slice::from_ref(batch),
    );
    Bytes::from(out.unwrap())
}

fn good_batch() -> RecordBatch {
    pair_shard::to_batch("t", &[record()]).unwrap()
}

/// The good batch with column `name` replaced by `array` (of any type).
fn with_column(name: &str, array: ArrayRef, nullable: bool) -> RecordBatch {
    let batch = good_batch();
    let schema = batch.schema();
    let index = schema.index_of(name).unwrap();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[index] = Field::new(name, array.data_type().clone(), nullable);
    let mut columns = batch.columns().to_vec();
    columns[index] = array;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn message(result: Result<Vec<PairRecord>, SchemaError>) -> String {
    result.expect_err("the file must be refused").to_string()
}

#[test]
fn a_newer_schema_version_is_refused_naming_file_and_versions() {
    let bytes = file_with(
        SchemaId {
            name: "pair_shard",
            version: 2,
        },
        &good_batch(),
    );
    let err = pair_shard::read("s3://bucket/00007.parquet", bytes).unwrap_err();
    assert!(matches!(err, SchemaError::WrongVersion { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "s3://bucket/00007.parquet: schema `pair_shard` has version 2, this build reads version 1"
    );
}

#[test]
fn another_schema_is_refused() {
    let bytes = file_with(region_features::ID, &good_batch());
    let msg = message(pair_shard::read("x.parquet", bytes));
    assert_eq!(
        msg,
        "x.parquet: schema is `region_features`, expected `pair_shard`"
    );
}

#[test]
fn a_file_without_identity_is_refused() {
    let batch = good_batch();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    let bytes = Bytes::from(writer.into_inner().unwrap());
    let msg = message(pair_shard::read("plain.parquet", bytes));
    assert!(
        msg.starts_with("plain.parquet: no `imagebert.schema` entry"),
        "{msg}"
    );
}

#[test]
fn a_column_of_the_wrong_type_is_refused_naming_the_column() {
    let widths: ArrayRef = Arc::new(StringArray::from(vec!["400"]));
    let bytes = file_with(pair_shard::ID, &with_column("width", widths, true));
    let msg = message(pair_shard::read("bad.parquet", bytes));
    assert_eq!(
        msg,
        "bad.parquet: column `width` has type Utf8 (nullable), expected UInt32 (nullable)"
    );
}

#[test]
fn a_nullable_column_where_nulls_are_forbidden_is_refused() {
    let keys: ArrayRef = Arc::new(StringArray::from(vec![Some("k")]));
    let bytes = file_with(pair_shard::ID, &with_column("key", keys, true));
    let msg = message(pair_shard::read("n.parquet", bytes));
    assert!(
        msg.contains("column `key` has type Utf8 (nullable), expected Utf8 (not null)"),
        "{msg}"
    );
}

#[test]
fn a_missing_column_is_refused_naming_it() {
    let batch = good_batch();
    let index = batch.schema().index_of("sha256").unwrap();
    let batch = batch
        .project(
            &(0..batch.num_columns())
                .filter(|&i| i != index)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let msg = message(pair_shard::read(
        "m.parquet",
        file_with(pair_shard::ID, &batch),
    ));
    assert_eq!(msg, "m.parquet: column `sha256` is missing");
}

#[test]
fn an_unknown_status_value_is_refused_naming_row_and_column() {
    let statuses: ArrayRef = Arc::new(StringArray::from(vec!["maybe"]));
    let bytes = file_with(pair_shard::ID, &with_column("status", statuses, false));
    let msg = message(pair_shard::read("v.parquet", bytes));
    assert_eq!(
        msg,
        "v.parquet: row 0, column `status`: unknown status `maybe`"
    );
}

#[test]
fn a_truncated_file_is_refused_naming_it() {
    let bytes = pair_shard::write("t", Vec::new(), &[record()]).unwrap();
    let truncated = Bytes::from(bytes[..bytes.len() / 2].to_vec());
    let err = pair_shard::read("cut.parquet", truncated).unwrap_err();
    assert!(matches!(err, SchemaError::Parquet { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cut.parquet: parquet:"),
        "{err}"
    );
}

#[test]
fn region_features_whose_lengths_disagree_are_refused_on_write() {
    let record = RegionRecord {
        key: "k".into(),
        status: RegionStatus::Ok,
        error_message: None,
        image_size: Some((10, 10)),
        boxes: vec![[0.0, 0.0, 5.0, 5.0]; 2],
        class_ids: vec![1, 2],
        class_scores: vec![0.9, 0.8],
        attribute_ids: None,
        attribute_scores: None,
        features: vec![f16::ZERO; 7],
    };
    let err = region_features::to_batch("r.parquet", 4, &[record]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "r.parquet: row 0, column `features`: 7 values for 2 boxes, expected 8"
    );
}

#[test]
fn region_features_without_detector_metadata_are_refused() {
    let batch = region_features::to_batch("r", 1, &[]).unwrap();
    let bytes = parquet_io::write(
        "r",
        Vec::new(),
        region_features::ID,
        &region_features::schema(),
        &WriteOptions::default(),
        &[batch],
    )
    .unwrap();
    let err = RegionReader::open("r.parquet", Bytes::from(bytes))
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "r.parquet: metadata `imagebert.detector.name`: missing"
    );
}

#[test]
fn a_region_file_claiming_another_feature_size_is_refused_on_read() {
    let info = DetectorInfo {
        name: "d".into(),
        version: "1".into(),
        feature_dim: 3,
        num_classes: 2,
        num_attributes: None,
    };
    let record = RegionRecord {
        key: "k".into(),
        status: RegionStatus::Ok,
        error_message: None,
        image_size: Some((10, 10)),
        boxes: vec![[0.0, 0.0, 5.0, 5.0]],
        class_ids: vec![1],
        class_scores: vec![0.9],
        attribute_ids: None,
        attribute_scores: None,
        features: vec![f16::ONE; 3],
    };
    let bytes = region_features::write("r", Vec::new(), &info, &[record]).unwrap();
    let mut reader = RegionReader::open("r.parquet", Bytes::from(bytes)).unwrap();
    let (first, batch) = reader.batches.next_batch().unwrap().unwrap();
    let err = region_features::from_batch("r.parquet", first, 4, &batch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "r.parquet: row 0, column `features`: 3 values for 1 boxes, expected 4"
    );
}

#[test]
fn json_side_files_of_another_version_or_schema_are_refused() {
    let mut stats = ShardStats::new("a.parquet", "pipeline ingest");
    stats.schema_version = 9;
    let err = ShardStats::from_json("a_stats.json", &stats.to_json()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a_stats.json: schema `shard_stats` has version 9, this build reads version 1"
    );

    let manifest = DatasetManifest::new("d", "t");
    let err = ShardStats::from_json("manifest.json", &manifest.to_json()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest.json: schema is `dataset_manifest`, expected `shard_stats`"
    );

    let err = DatasetManifest::from_json("m.json", b"{\"name\": 1}").unwrap_err();
    assert!(
        err.to_string().starts_with("m.json: no `schema` entry"),
        "{err}"
    );
}

#[test]
fn nested_list_item_names_from_other_writers_are_accepted() {
    // pyarrow names list items `element`; only the types must agree.
    let schema = region_features::schema();
    let renamed: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::List(item) => Field::new(
                f.name(),
                DataType::List(Arc::new(item.as_ref().clone().with_name("element"))),
                f.is_nullable(),
            ),
            _ => f.as_ref().clone(),
        })
        .collect();
    schemas::identity::check_columns("p.parquet", &Schema::new(renamed), &schema).unwrap();
}
