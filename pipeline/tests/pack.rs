//! `pipeline pack` on a small Karpathy file over the real photos (chelsea.png is 451x300, which
//! ingest's size filter drops, plus a generated 40x30 image) and a text file posing as an image:
//! rows, shards, stats, resume, `--splits`, and errors naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline::imaging::{self, ImageConfig};
use pipeline::pack::{PackJob, PackSummary, STAGE, pack};
use schemas::karpathy::Split;
use schemas::pair_shard::{self, PairRecord, Status, TextSource};
use schemas::shard_stats::{ShardStats, stats_file_name};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos");

/// (filepath, filename, split, captions), in JSON order.
const IMAGES: [(Option<&str>, &str, &str, [&str; 2]); 6] = [
    (
        None,
        "chelsea.png",
        "test",
        ["A tabby cat looks up.", "A cat."],
    ),
    (None, "coffee.png", "val", ["A cup of coffee.", "Coffee."]),
    (
        None,
        "astronaut.png",
        "train",
        ["An astronaut with a flag.", "A woman."],
    ),
    (
        Some("darknet"),
        "dog.jpg",
        "test",
        ["A dog next to a bicycle.", "A dog."],
    ),
    (None, "notes.jpg", "restval", ["Not a picture.", "Text."]),
    (None, "tiny.png", "test", ["A small red square.", "Red."]),
];

/// A benchmark folder: the Karpathy JSON and the image root.
struct Benchmark {
    dir: tempfile::TempDir,
    karpathy: PathBuf,
    images: PathBuf,
}

fn benchmark() -> Benchmark {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("darknet")).unwrap();
    for name in [
        "chelsea.png",
        "coffee.png",
        "astronaut.png",
        "darknet/dog.jpg",
    ] {
        std::fs::copy(Path::new(PHOTOS).join(name), images.join(name)).unwrap();
    }
    std::fs::write(images.join("notes.jpg"), "these are not pixels\n").unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30]))
        .save(images.join("tiny.png"))
        .unwrap();
    let entries: Vec<serde_json::Value> = IMAGES
        .iter()
        .map(|(filepath, filename, split, captions)| {
            let mut entry = serde_json::json!({
                "filename": filename,
                "split": split,
                "sentences": captions.iter().map(|raw| serde_json::json!({"raw": raw})).collect::<Vec<_>>(),
            });
            if let Some(folder) = filepath {
                entry["filepath"] = serde_json::json!(folder);
            }
            entry
        })
        .collect();
    let karpathy = dir.path().join("dataset_test.json");
    std::fs::write(
        &karpathy,
        serde_json::to_vec(&serde_json::json!({"dataset": "test", "images": entries})).unwrap(),
    )
    .unwrap();
    Benchmark {
        dir,
        karpathy,
        images,
    }
}

fn job(bench: &Benchmark, output: &Path, splits: &[Split]) -> PackJob {
    PackJob {
        karpathy: bench.karpathy.clone(),
        images: bench.images.clone(),
        output: output.display().to_string(),
        splits: splits.to_vec(),
        rows_per_shard: 2,
        image: ImageConfig::default(),
        progress: false,
    }
}

/// The committed shards at `output`, in order, with their rows; checks each has its stats.
fn read_output(output: &Path) -> Vec<Vec<PairRecord>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let location = storage::Location::parse(&output.display().to_string()).unwrap();
    let listing = runtime
        .block_on(pipeline::ingest::list_shards(&location))
        .unwrap();
    assert!(listing.uncommitted.is_empty(), "{listing:?}");
    listing
        .committed
        .iter()
        .map(|name| {
            let stats_path = output.join(stats_file_name(name));
            let stats = ShardStats::from_json(
                &stats_path.display().to_string(),
                &std::fs::read(&stats_path).unwrap(),
            )
            .unwrap();
            let file = std::fs::File::open(output.join(name)).unwrap();
            let records = pair_shard::read(name, file).unwrap();
            assert_eq!(stats.stage, STAGE);
            assert_eq!(stats.shard, *name);
            assert_eq!(stats.rows, records.len() as u64);
            records
        })
        .collect()
}

/// Runs [`pack`] on its own runtime.
fn run(job: PackJob) -> anyhow::Result<PackSummary> {
    tokio::runtime::Runtime::new().unwrap().block_on(pack(job))
}

fn keys(shards: &[Vec<PairRecord>]) -> Vec<&str> {
    shards.iter().flatten().map(|r| r.key.as_str()).collect()
}

#[test]
fn packs_every_image_in_json_order_and_resumes() {
    let bench = benchmark();
    let output = bench.dir.path().join("out");
    let all = [Split::Train, Split::Restval, Split::Val, Split::Test];

    let summary = run(job(&bench, &output, &all)).unwrap();
    assert_eq!(
        summary,
        PackSummary {
            shards_written: 3,
            shards_skipped: 0,
            rows_kept: 5,
            rows_failed: 1,
        }
    );
    let shards = read_output(&output);
    assert_eq!(shards.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    let names: Vec<&str> = IMAGES.iter().map(|(_, name, _, _)| *name).collect();
    assert_eq!(keys(&shards), names);

    let no_minimum = ImageConfig {
        min_width: 0,
        min_height: 0,
        ..ImageConfig::default()
    };
    for (index, record) in shards.iter().flatten().enumerate() {
        let (folder, name, _, captions) = IMAGES[index];
        let relative = folder.map_or(name.to_owned(), |f| format!("{f}/{name}"));
        let path = bench.images.join(&relative);
        assert_eq!(record.url, format!("file://{}", path.display()));
        assert_eq!(record.text.as_deref(), Some(captions[0]));
        assert_eq!(record.text_source, Some(TextSource::Caption));
        assert_eq!(record.language, None);
        assert_eq!(record.source_file, bench.karpathy.display().to_string());
        assert_eq!(record.source_offset, Some(index as u64));
        if name == "notes.jpg" {
            assert_eq!(record.status, Status::FailedPermanent);
            let message = record.error_message.as_deref().unwrap();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(record.drop_reason.is_some());
            assert_eq!(record.image, None);
            continue;
        }
        // Kept, with the image exactly as ingest encodes it, whatever its size.
        assert_eq!(record.status, Status::Kept, "{record:?}");
        let bytes = std::fs::read(&path).unwrap();
        let expected = imaging::process(&bytes, None, &no_minimum).unwrap();
        assert_eq!(record.image.as_deref(), Some(expected.jpeg.as_slice()));
        assert_eq!(
            record.sha256.as_deref(),
            Some(imaging::sha256_hex(&bytes).as_str())
        );
        assert_eq!(record.perceptual_hash, Some(expected.phash));
        assert_eq!(
            (record.width, record.height),
            (Some(expected.width), Some(expected.height))
        );
        assert_eq!(
            (record.original_width, record.original_height),
            (
                Some(expected.original_width),
                Some(expected.original_height)
            )
        );
    }
    let sizes = |name: &str| {
        let r = shards.iter().flatten().find(|r| r.key == name).unwrap();
        (r.original_width, r.original_height)
    };
    assert_eq!(sizes("chelsea.png"), (Some(451), Some(300)));
    assert_eq!(sizes("tiny.png"), (Some(40), Some(30)));

    // A rerun finds every shard committed and leaves them alone.
    let before = std::fs::read(output.join("00001.parquet")).unwrap();
    let again = run(job(&bench, &output, &all)).unwrap();
    assert_eq!(
        again,
        PackSummary {
            shards_skipped: 3,
            ..PackSummary::default()
        }
    );
    assert_eq!(std::fs::read(output.join("00001.parquet")).unwrap(), before);

    // Other splits would regroup the rows: refused.
    let err = run(job(&bench, &output, &[Split::Test]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--splits"), "{err}");
}

#[test]
fn splits_select_their_images() {
    let bench = benchmark();
    let output = bench.dir.path().join("test-only");
    let summary = run(job(&bench, &output, &[Split::Test])).unwrap();
    assert_eq!(
        summary,
        PackSummary {
            shards_written: 2,
            shards_skipped: 0,
            rows_kept: 3,
            rows_failed: 0,
        }
    );
    let shards = read_output(&output);
    assert_eq!(keys(&shards), ["chelsea.png", "dog.jpg", "tiny.png"]);
    let offsets: Vec<Option<u64>> = shards.iter().flatten().map(|r| r.source_offset).collect();
    assert_eq!(offsets, [Some(0), Some(3), Some(5)]);
}

#[test]
fn the_command_packs_chosen_splits_and_prints_a_summary() {
    let bench = benchmark();
    let output = bench.dir.path().join("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("pack")
        .arg("--karpathy")
        .arg(&bench.karpathy)
        .arg("--images")
        .arg(&bench.images)
        .arg("--output")
        .arg(&output)
        .args(["--splits", "val,restval", "--rows-per-shard", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary,
        serde_json::json!({"shards_written": 1, "shards_skipped": 0, "rows_kept": 1, "rows_failed": 1})
    );
    assert_eq!(keys(&read_output(&output)), ["coffee.png", "notes.jpg"]);
}

#[test]
fn bad_inputs_are_refused_naming_the_file() {
    let bench = benchmark();
    let output = bench.dir.path().join("never");
    let bad = bench.dir.path().join("broken_coco.json");
    std::fs::write(&bad, r#"{"images": [{"filename": "a.jpg", "split": "test""#).unwrap();
    let run = |karpathy: &Path, images: &Path, splits: &str| {
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .arg("pack")
            .arg("--karpathy")
            .arg(karpathy)
            .arg("--images")
            .arg(images)
            .arg("--output")
            .arg(&output)
            .args(["--splits", splits])
            .output()
            .unwrap()
    };
    let missing_folder = bench.dir.path().join("no-such-folder");
    let missing_json = bench.dir.path().join("missing.json");
    for (karpathy, images, splits, named) in [
        (&bad, &bench.images, "test", &bad),
        (&missing_json, &bench.images, "test", &missing_json),
        (&bench.karpathy, &missing_folder, "test", &missing_folder),
    ] {
        let out = run(karpathy, images, splits);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(&named.display().to_string()), "{stderr}");
    }
    let out = run(&bench.karpathy, &bench.images, "dev");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`dev` is not train"));
    assert!(!output.exists(), "nothing is written for refused inputs");
}
