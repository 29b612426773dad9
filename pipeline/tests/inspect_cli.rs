//! `pipeline inspect` run as a user would: it summarises valid files and refuses bad ones with
//! the file and column named, exiting non-zero.

use std::path::Path;
use std::process::{Command, Output};

use schemas::pair_shard::{self, PairRecord, Status};
use schemas::parquet_io::{self, WriteOptions};
use schemas::shard_stats::ShardStats;

fn pipeline(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("run pipeline")
}

fn record(i: usize, status: Status) -> PairRecord {
    PairRecord {
        text: Some("a red bus".into()),
        language: Some("en".into()),
        drop_reason: (status == Status::Dropped).then(|| "too_small".to_owned()),
        http_status: Some(200),
        image: (status == Status::Kept).then(|| vec![1, 2, 3]),
        source_offset: Some(i as u64),
        ..PairRecord::new(
            format!("{i:09}"),
            format!("http://127.0.0.1/{i}.jpg"),
            status,
            "list.csv",
        )
    }
}

#[test]
fn inspect_counts_statuses_and_drop_reasons_of_a_pair_shard() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("00000.parquet");
    let records: Vec<_> = (0..5)
        .map(|i| record(i, if i < 3 { Status::Kept } else { Status::Dropped }))
        .collect();
    pair_shard::write(
        "00000.parquet",
        std::fs::File::create(&shard).unwrap(),
        &records,
    )
    .unwrap();
    let stats = dir.path().join("00000_stats.json");
    std::fs::write(
        &stats,
        ShardStats::new("00000.parquet", "pipeline ingest").to_json(),
    )
    .unwrap();

    let out = pipeline(&[&shard, &stats]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["rows"], 5);
    assert_eq!(lines[0]["counts_by_status"]["kept"], 3);
    assert_eq!(lines[0]["counts_by_status"]["dropped"], 2);
    assert_eq!(lines[0]["drop_reasons"]["too_small"], 2);
    assert_eq!(lines[0]["image_bytes"], 9);
    assert_eq!(lines[1]["schema"], "shard_stats");
}

#[test]
fn inspect_refuses_a_wrong_version_naming_the_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("old.parquet");
    let batch = pair_shard::to_batch("old", &[record(0, Status::Kept)]).unwrap();
    let id = schemas::SchemaId {
        name: "pair_shard",
        version: 7,
    };
    let file = std::fs::File::create(&shard).unwrap();
    parquet_io::write(
        "old",
        file,
        id,
        &batch.schema(),
        &WriteOptions::default(),
        &[batch],
    )
    .unwrap();

    let out = pipeline(&[&shard]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{}: schema `pair_shard` has version 7, this build reads version 1",
            shard.display()
        )),
        "{stderr}"
    );
}

#[test]
fn inspect_refuses_a_file_that_is_not_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.parquet");
    std::fs::write(&path, b"just text").unwrap();
    let out = pipeline(&[&path]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("notes.parquet: not a Parquet file"),
        "{stderr}"
    );
}
