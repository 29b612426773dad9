//! Every format writes and reads back to the same values.

use std::collections::BTreeMap;

use half::f16;
use schemas::manifest::{DatasetManifest, ManifestShard};
use schemas::pair_shard::{self, PairRecord, Status, TextSource};
use schemas::region_features::{self, DetectorInfo, RegionReader, RegionRecord, RegionStatus};
use schemas::shard_stats::{self, ShardStats};

fn kept_pair(i: u32) -> PairRecord {
    PairRecord {
        key: format!("00000{i:04}"),
        url: format!("http://127.0.0.1:8080/img/{i}.jpg"),
        page_url: Some("http://127.0.0.1:8080/page.html".into()),
        text: Some(format!("a cat sitting on a mat number {i}")),
        text_source: Some(TextSource::Alt),
        language: Some("en".into()),
        language_score: Some(0.97),
        status: Status::Kept,
        drop_reason: None,
        error_message: None,
        http_status: Some(200),
        width: Some(512),
        height: Some(384),
        original_width: Some(1024),
        original_height: Some(768),
        sha256: Some(format!("{:064x}", i)),
        perceptual_hash: Some(0xdead_beef_0000_0000 | u64::from(i)),
        nsfw_score: Some(0.01),
        relevance_score: Some(0.8),
        image: Some(vec![0xff, 0xd8, 0xff, i as u8]),
        source_file: "urls.parquet".into(),
        source_offset: Some(u64::from(i)),
    }
}

fn dropped_pair(i: u32) -> PairRecord {
    PairRecord {
        key: format!("00000{i:04}"),
        url: format!("http://127.0.0.1:8080/tiny/{i}.png"),
        page_url: None,
        text: None,
        text_source: None,
        language: None,
        language_score: None,
        status: Status::Dropped,
        drop_reason: Some("too_small".into()),
        error_message: Some("1x1 px is below 300x300".into()),
        http_status: None,
        width: None,
        height: None,
        original_width: Some(1),
        original_height: Some(1),
        sha256: None,
        perceptual_hash: None,
        nsfw_score: None,
        relevance_score: None,
        image: None,
        source_file: "CC-MAIN-example.warc.gz".into(),
        source_offset: None,
    }
}

#[test]
fn pair_shard_round_trips_every_column_across_row_groups() {
    // More rows than one row group (1024) so that multi-batch reading and row offsets are used.
    let records: Vec<PairRecord> = (0..1500u32)
        .map(|i| {
            if i % 3 == 0 {
                dropped_pair(i)
            } else {
                kept_pair(i)
            }
        })
        .collect();
    let bytes = pair_shard::write("mem.parquet", Vec::new(), &records).unwrap();
    let back = pair_shard::read("mem.parquet", bytes::Bytes::from(bytes)).unwrap();
    assert_eq!(back, records);
}

#[test]
fn pair_shard_on_disk_carries_its_identity_in_key_value_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000.parquet");
    let file = std::fs::File::create(&path).unwrap();
    pair_shard::write("00000.parquet", file, &[kept_pair(1)]).unwrap();
    let reader = pair_shard::open("00000.parquet", std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.metadata()["imagebert.schema"], "pair_shard");
    assert_eq!(reader.metadata()["imagebert.schema_version"], "1");
    assert_eq!(reader.num_rows(), 1);
}

fn detector(feature_dim: usize) -> DetectorInfo {
    DetectorInfo {
        name: "test-detector".into(),
        version: "0.0.1".into(),
        feature_dim,
        num_classes: 80,
        num_attributes: Some(400),
    }
}

fn region(i: u32, boxes: usize, dim: usize) -> RegionRecord {
    RegionRecord {
        key: format!("k{i}"),
        status: RegionStatus::Ok,
        error_message: None,
        image_size: Some((640, 480)),
        boxes: (0..boxes)
            .map(|b| [b as f32, 2.0 * b as f32, 100.0 + b as f32, 200.0])
            .collect(),
        class_ids: (0..boxes as u32).map(|b| (b * 7 + i) % 80).collect(),
        class_scores: (0..boxes).map(|b| 1.0 / (b + 1) as f32).collect(),
        attribute_ids: Some((0..boxes as u32).collect()),
        attribute_scores: Some(vec![0.5; boxes]),
        features: (0..boxes * dim)
            .map(|v| f16::from_f32(v as f32 / 64.0))
            .collect(),
    }
}

#[test]
fn region_shard_round_trips_boxes_classes_and_f16_features() {
    let dim = 16;
    let mut records: Vec<RegionRecord> = (0..300u32)
        .map(|i| region(i, 10 + i as usize % 91, dim))
        .collect();
    records.push(RegionRecord {
        key: "broken".into(),
        status: RegionStatus::Failed,
        error_message: Some("undecodable JPEG".into()),
        image_size: None,
        boxes: vec![],
        class_ids: vec![],
        class_scores: vec![],
        attribute_ids: None,
        attribute_scores: None,
        features: vec![],
    });
    let bytes = region_features::write("r.parquet", Vec::new(), &detector(dim), &records).unwrap();
    let (info, back) = RegionReader::open("r.parquet", bytes::Bytes::from(bytes))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(info, detector(dim));
    assert_eq!(back, records);
}

#[test]
fn region_shard_stores_the_papers_five_d_box() {
    let record = region(0, 2, 4);
    let five = record.normalized_boxes();
    // Box 1 is (1, 2, 101, 200) in a 640x480 image.
    let expected = [
        1.0 / 640.0,
        2.0 / 480.0,
        101.0 / 640.0,
        200.0 / 480.0,
        100.0 * 198.0 / (640.0 * 480.0),
    ];
    for (got, want) in five[1].iter().zip(expected) {
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
    }
    let batch = region_features::to_batch("x", 4, &[record]).unwrap();
    let column = batch.column_by_name("boxes_5d").unwrap();
    let list = column
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .unwrap();
    assert_eq!(list.value(0).len(), 2);
}

#[test]
fn stats_and_manifest_round_trip_through_json() {
    let mut stats = ShardStats::new("00003.parquet", "pipeline ingest");
    stats.rows = 10;
    stats.counts_by_status = BTreeMap::from([("kept".into(), 7), ("dropped".into(), 3)]);
    stats.drop_reasons = BTreeMap::from([("too_small".into(), 3)]);
    stats.durations_s = BTreeMap::from([("total".into(), 1.5)]);
    let back = ShardStats::from_json("s.json", &stats.to_json()).unwrap();
    assert_eq!(back, stats);
    assert_eq!(
        shard_stats::stats_file_name("00003.parquet"),
        "00003_stats.json"
    );

    let mut manifest = DatasetManifest::new("demo", "pipeline 0.1.0");
    manifest.shards.push(ManifestShard {
        pair_shard: "00003.parquet".into(),
        stats: "00003_stats.json".into(),
        rows: 10,
        kept: 7,
        region_features: Some("00003.regions.parquet".into()),
    });
    let back = DatasetManifest::from_json("m.json", &manifest.to_json()).unwrap();
    assert_eq!(back, manifest);
    assert_eq!(back.total_rows(), 10);
}

#[test]
fn only_numbered_parquet_files_are_pair_shards_and_region_shards_sit_beside_them() {
    use schemas::{pair_shard, region_features, shard_stats::stats_file_name};
    assert_eq!(pair_shard::file_name(42), "00042.parquet");
    assert_eq!(pair_shard::file_number("00042.parquet"), Some(42));
    assert_eq!(pair_shard::file_number("1234567.parquet"), Some(1_234_567));
    for other in [
        "00042.regions.parquet",
        "00042_stats.json",
        "_ingest.json",
        ".parquet",
        "x0042.parquet",
        "sub/00042.parquet",
    ] {
        assert_eq!(pair_shard::file_number(other), None, "{other}");
    }
    assert_eq!(
        region_features::file_name_for("00042.parquet"),
        "00042.regions.parquet"
    );
    assert_eq!(
        stats_file_name(&region_features::file_name_for("00042.parquet")),
        "00042.regions_stats.json"
    );
}
