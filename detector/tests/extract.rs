//! `detector extract` end to end on real pair shards made from the photos in `assets/photos`,
//! with a content-derived stand-in detector (see [`ContentBoxes`]).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, bail, ensure};
use clap::Parser;
use cluster::Slice;
use detector::cli::{ExtractArgs, run_extract};
use detector::config::ExtractConfig;
use detector::extract::{ExtractJob, ExtractSummary, RUN_FILE, STAGE, extract};
use detector::regions::{Prepared, Preprocess, RegionDetector, Regions, RgbImage};
use half::f16;
use schemas::pair_shard::{self, PairRecord, Status};
use schemas::region_features::{DetectorInfo, RegionReader, RegionRecord, RegionStatus};
use schemas::shard_stats::ShardStats;
use storage::Location;

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos");
/// Photos of several aspect ratios (so several input sizes), two of them greyscale.
const PHOTO_FILES: [&str; 6] = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coins.png",
    "rocket.jpg",
    "motorcycle_left.png",
];
/// Longest side of the stored test images, pixels (the pipeline stores up to 512).
const TEST_SIDE: u32 = 80;

// ---------------------------------------------------------------------------------------------
// TEST-ONLY stand-in for a real region detector. The real network (CenterNet) is wired in by the
// lead and tested separately; this one derives regions from pixel content deterministically, so
// the driver's plumbing (which image reaches which key, sizes, order, batching) can be checked
// exactly against the same function run on independently decoded images:
//   region "bright" (class 0): bounding box of pixels with luma > 0.7,
//   region "dark"   (class 1): bounding box of pixels with luma < 0.3,
//   score: the share of the box's pixels that qualify; features: the box's mean R, G, B.
// Inputs are padded (not scaled) to multiples of 32, like a stride-32 detector, so photos of
// different sizes land in different size buckets.
// ---------------------------------------------------------------------------------------------

const FEATURE_DIM: usize = 3;

/// Test-only preprocessing: RGB to 0..1 floats, HWC, zero-padded to multiples of 32. Counts
/// the images it prepared.
struct PadTo32(Arc<AtomicUsize>);

impl Preprocess for PadTo32 {
    fn prepare(&self, image: &RgbImage) -> Result<Prepared> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let (w, h) = (
            image.width.div_ceil(32) * 32,
            image.height.div_ceil(32) * 32,
        );
        let mut data = vec![0.0; (w * h * 3) as usize];
        for y in 0..image.height as usize {
            for x in 0..image.width as usize {
                for c in 0..3 {
                    data[(y * w as usize + x) * 3 + c] =
                        f32::from(image.pixels[(y * image.width as usize + x) * 3 + c]) / 255.0;
                }
            }
        }
        Ok(Prepared {
            original_width: image.width,
            original_height: image.height,
            input_width: w,
            input_height: h,
            data,
        })
    }
}

/// The stand-in's regions of a `width`×`height` image whose pixel (x, y) is `pixel(x, y)`.
fn content_regions(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [f32; 3]) -> Regions {
    let luma = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let mut found: Vec<(f32, [f32; 4], u32, [f32; 3])> = Vec::new();
    let rules: [(u32, &dyn Fn(f32) -> bool); 2] = [(0, &|l| l > 0.7), (1, &|l| l < 0.3)];
    for (class, rule) in rules {
        let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
        for y in 0..height {
            for x in 0..width {
                if rule(luma(pixel(x, y))) {
                    (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1));
                }
            }
        }
        if x1 == u32::MAX {
            continue;
        }
        let (mut hits, mut sum) = (0u32, [0f32; 3]);
        for y in y1..y2 {
            for x in x1..x2 {
                let p = pixel(x, y);
                hits += u32::from(rule(luma(p)));
                (0..3).for_each(|c| sum[c] += p[c]);
            }
        }
        let area = ((x2 - x1) * (y2 - y1)) as f32;
        let b = [x1 as f32, y1 as f32, x2 as f32, y2 as f32];
        found.push((hits as f32 / area, b, class, sum.map(|s| s / area)));
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    Regions {
        boxes: found.iter().map(|f| f.1).collect(),
        class_ids: found.iter().map(|f| f.2).collect(),
        class_scores: found.iter().map(|f| f.0).collect(),
        attribute_ids: None,
        attribute_scores: None,
        features: found.iter().flat_map(|f| f.3).collect(),
    }
}

/// The test-only stand-in detector, counting its `detect` calls.
struct ContentBoxes {
    version: &'static str,
    calls: Arc<AtomicUsize>,
    prepared: Arc<AtomicUsize>,
    batch_size: usize,
    fail_with: Option<&'static str>,
    /// The first `detect` call waits until the next batch has been prepared (and fails after
    /// ten seconds): proof that host work runs while the device works.
    await_prefetch: bool,
}

impl ContentBoxes {
    fn new(batch_size: usize) -> Self {
        Self {
            version: "test-1",
            calls: Arc::new(AtomicUsize::new(0)),
            prepared: Arc::new(AtomicUsize::new(0)),
            batch_size,
            fail_with: None,
            await_prefetch: false,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl RegionDetector for ContentBoxes {
    fn info(&self) -> DetectorInfo {
        DetectorInfo {
            name: "test-content-boxes".into(),
            version: self.version.into(),
            feature_dim: FEATURE_DIM,
            num_classes: 2,
            num_attributes: None,
        }
    }

    fn preprocessor(&self) -> Arc<dyn Preprocess> {
        Arc::new(PadTo32(Arc::clone(&self.prepared)))
    }

    fn detect(&mut self, batch: Vec<Prepared>) -> Result<Vec<Regions>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.await_prefetch && call == 0 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.prepared.load(Ordering::SeqCst) < batch.len() + self.batch_size {
                ensure!(
                    std::time::Instant::now() < deadline,
                    "the next batch was not prepared while detect ran"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if let Some(message) = self.fail_with {
            bail!("{message}");
        }
        ensure!(
            !batch.is_empty() && batch.len() <= self.batch_size,
            "batch of {} for batch size {}",
            batch.len(),
            self.batch_size
        );
        let size = (batch[0].input_width, batch[0].input_height);
        ensure!(
            batch
                .iter()
                .all(|p| (p.input_width, p.input_height) == size),
            "one batch mixes input sizes"
        );
        Ok(batch
            .iter()
            .map(|p| {
                let at = |x: u32, y: u32| {
                    let i = ((y * p.input_width + x) * 3) as usize;
                    [p.data[i], p.data[i + 1], p.data[i + 2]]
                };
                content_regions(p.original_width, p.original_height, at)
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Pair shards from real photos.
// ---------------------------------------------------------------------------------------------

/// `file` from the photo assets, scaled to [`TEST_SIDE`] and re-encoded as JPEG (what the
/// pipeline stores), with its stored size.
fn photo_jpeg(file: &str) -> (Vec<u8>, u32, u32) {
    photo_jpeg_sized(file, TEST_SIDE)
}

/// `file` from the photo assets, longest side at most `side`, re-encoded as JPEG.
fn photo_jpeg_sized(file: &str, side: u32) -> (Vec<u8>, u32, u32) {
    let image = image::open(Path::new(PHOTOS).join(file)).unwrap();
    let image = image.resize(side, side, image::imageops::FilterType::Triangle);
    let rgb = image::DynamicImage::ImageRgb8(image.to_rgb8());
    let mut jpeg = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    (jpeg.into_inner(), rgb.width(), rgb.height())
}

fn kept(key: &str, (jpeg, width, height): (Vec<u8>, u32, u32)) -> PairRecord {
    PairRecord {
        text: Some(format!("a photo {key}")),
        width: Some(width),
        height: Some(height),
        image: Some(jpeg),
        ..PairRecord::new(
            key,
            format!("https://example.org/{key}.jpg"),
            Status::Kept,
            "urls.csv",
        )
    }
}

fn not_kept(key: &str, status: Status) -> PairRecord {
    PairRecord {
        drop_reason: Some("too_small".into()),
        ..PairRecord::new(
            key,
            format!("https://example.org/{key}.jpg"),
            status,
            "urls.csv",
        )
    }
}

/// Writes pair shard `number` into `dir`, with its stats file when `committed`.
fn write_pair_shard(dir: &Path, number: u64, rows: &[PairRecord], committed: bool) {
    let name = format!("{number:05}.parquet");
    let file = std::fs::File::create(dir.join(&name)).unwrap();
    pair_shard::write(&name, file, rows).unwrap();
    if committed {
        let stats = ShardStats::new(&name, "pipeline ingest");
        std::fs::write(dir.join(format!("{number:05}_stats.json")), stats.to_json()).unwrap();
    }
}

/// Kept rows of the photos in `files`, keyed `NNNNN-RRRRRR`.
fn photo_rows(number: u64, files: &[&str]) -> Vec<PairRecord> {
    files
        .iter()
        .enumerate()
        .map(|(row, file)| kept(&format!("{number:05}-{row:06}"), photo_jpeg(file)))
        .collect()
}

fn job(input: &Path, output: &Path, slice: Slice, batch_size: usize) -> ExtractJob {
    ExtractJob {
        input: Location::parse(input.to_str().unwrap()).unwrap(),
        output: Location::parse(output.to_str().unwrap()).unwrap(),
        slice,
        config: ExtractConfig {
            batch_size,
            decode_threads: 2,
            ..ExtractConfig::default()
        },
        progress: false,
    }
}

fn read_regions(path: &Path) -> (DetectorInfo, Vec<RegionRecord>) {
    let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
    RegionReader::open(&path.display().to_string(), bytes)
        .unwrap()
        .read_all()
        .unwrap()
}

/// The stats file as the shared type, and the extra `boxes_total` field.
fn read_stats(path: &Path) -> (ShardStats, u64) {
    let bytes = std::fs::read(path).unwrap();
    let stats = ShardStats::from_json(&path.display().to_string(), &bytes).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    (stats, json["boxes_total"].as_u64().unwrap())
}

/// What the stand-in must report for `record`'s image, decoded here independently.
fn expected_record(record: &PairRecord) -> RegionRecord {
    let rgb = image::load_from_memory(record.image.as_deref().unwrap())
        .unwrap()
        .to_rgb8();
    let pixel = |x, y| rgb.get_pixel(x, y).0.map(|v| f32::from(v) / 255.0);
    let regions = content_regions(rgb.width(), rgb.height(), pixel);
    RegionRecord {
        key: record.key.clone(),
        status: RegionStatus::Ok,
        error_message: None,
        image_size: Some(rgb.dimensions()),
        boxes: regions.boxes,
        class_ids: regions.class_ids,
        class_scores: regions.class_scores,
        attribute_ids: None,
        attribute_scores: None,
        features: regions.features.into_iter().map(f16::from_f32).collect(),
    }
}

fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_row_gets_one_region_row_beside_its_pair_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = photo_rows(0, &PHOTO_FILES);
    // Between the photos: a corrupt image, a dropped and a failed row (no image, no region row).
    let (jpeg, w, h) = photo_jpeg("coffee.png");
    // The JPEG cut inside its header (decoders conceal damaged scan data, not a lost header).
    rows.insert(2, kept("00000-corrupt", (jpeg[..64].to_vec(), w, h)));
    rows.insert(4, not_kept("00000-dropped", Status::Dropped));
    rows.push(not_kept("00000-failed", Status::FailedPermanent));
    write_pair_shard(dir.path(), 0, &rows, true);
    // A shard ingest has not committed yet: no stats file, so it must be left alone.
    write_pair_shard(dir.path(), 1, &photo_rows(1, &PHOTO_FILES[..2]), false);

    let mut detector = ContentBoxes::new(2);
    let summary = extract(job(dir.path(), dir.path(), Slice::WHOLE, 2), &mut detector)
        .await
        .unwrap();

    let (info, records) = read_regions(&dir.path().join("00000.regions.parquet"));
    assert_eq!(info, detector.info());
    let kept_rows: Vec<&PairRecord> = rows.iter().filter(|r| r.status == Status::Kept).collect();
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let kept_keys: Vec<&str> = kept_rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, kept_keys, "one row per kept pair, in pair order");
    let mut boxes = 0;
    for (pair, record) in kept_rows.iter().zip(&records) {
        if pair.key == "00000-corrupt" {
            assert_eq!(record.status, RegionStatus::Failed);
            let message = record.error_message.as_deref().unwrap();
            assert!(
                message.starts_with("00000-corrupt: undecodable image"),
                "{message}"
            );
            assert!(record.boxes.is_empty() && record.image_size.is_none());
            continue;
        }
        assert_eq!(*record, expected_record(pair), "{}", pair.key);
        assert_eq!(
            record.image_size,
            Some((pair.width.unwrap(), pair.height.unwrap()))
        );
        assert!(
            !record.boxes.is_empty(),
            "{}: photos have bright or dark parts",
            pair.key
        );
        boxes += record.boxes.len() as u64;
    }

    let (stats, boxes_total) = read_stats(&dir.path().join("00000.regions_stats.json"));
    assert_eq!(stats.stage, STAGE);
    assert_eq!(stats.shard, "00000.regions.parquet");
    assert_eq!(stats.rows, 7);
    assert_eq!(
        (
            count(&stats.counts_by_status, "ok"),
            count(&stats.counts_by_status, "failed")
        ),
        (6, 1)
    );
    assert_eq!(count(&stats.drop_reasons, "dropped"), 1);
    assert_eq!(count(&stats.drop_reasons, "failed_permanent"), 1);
    assert_eq!(count(&stats.error_tallies, "decode"), 1);
    for phase in [
        "read",
        "decode",
        "prepare",
        "detect",
        "host_wait",
        "write",
        "total",
    ] {
        assert!(stats.durations_s.contains_key(phase), "{phase}: {stats:?}");
    }
    assert!(stats.finished_unix_s >= stats.started_unix_s && stats.started_unix_s > 0.0);
    assert_eq!(boxes_total, boxes);

    assert!(!dir.path().join("00001.regions.parquet").exists());
    assert!(!dir.path().join("00001.regions_stats.json").exists());
    assert!(dir.path().join(RUN_FILE).exists());
    assert_eq!(
        (summary.shards_done, summary.shards_skipped),
        (1, 0),
        "{summary:?}"
    );
    assert_eq!((summary.images_ok, summary.images_failed), (6, 1));
    assert_eq!(summary.boxes, boxes);
    assert!(summary.images_per_second > 0.0);
    // Six photos in buckets of at most two of one input size: at least three calls.
    assert!(detector.calls() >= 3, "{}", detector.calls());
}

#[test]
fn num_shards_splits_the_shards_and_a_rerun_skips_finished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("pairs"), dir.path().join("regions"));
    std::fs::create_dir_all(&input).unwrap();
    write_pair_shard(&input, 0, &photo_rows(0, &PHOTO_FILES[..3]), true);
    write_pair_shard(&input, 1, &photo_rows(1, &PHOTO_FILES[3..]), true);

    let run = |index: &str, detector: &mut ContentBoxes| -> ExitCode {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            extract: ExtractArgs,
        }
        let args = Cli::try_parse_from([
            "extract",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--shard-index",
            index,
            "--num-shards",
            "2",
            "--batch-size",
            "4",
            "--no-progress",
        ])
        .unwrap();
        run_extract(&args.extract, detector)
    };
    let region_files = |number: u64| {
        [
            output.join(format!("{number:05}.regions.parquet")),
            output.join(format!("{number:05}.regions_stats.json")),
        ]
    };

    let mut first = ContentBoxes::new(4);
    assert_eq!(run("1", &mut first), ExitCode::SUCCESS);
    assert!(region_files(1).iter().all(|f| f.exists()));
    assert!(
        region_files(0).iter().all(|f| !f.exists()),
        "slice 1 owns odd shards only"
    );
    let (_, records) = read_regions(&region_files(1)[0]);
    let keys: Vec<String> = records.into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["00001-000000", "00001-000001", "00001-000002"]);
    assert!(first.calls() > 0);

    let mut second = ContentBoxes::new(4);
    assert_eq!(run("0", &mut second), ExitCode::SUCCESS);
    assert!(region_files(0).iter().all(|f| f.exists()));
    assert!(second.calls() > 0);

    // Both slices again: everything is committed, so the detector never runs.
    let written = std::fs::read(&region_files(1)[0]).unwrap();
    let mut rerun = ContentBoxes::new(4);
    assert_eq!(run("0", &mut rerun), ExitCode::SUCCESS);
    assert_eq!(run("1", &mut rerun), ExitCode::SUCCESS);
    assert_eq!(rerun.calls(), 0);
    assert_eq!(std::fs::read(&region_files(1)[0]).unwrap(), written);
}

#[tokio::test]
async fn a_region_shard_without_stats_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let rows = photo_rows(3, &PHOTO_FILES[..2]);
    write_pair_shard(dir.path(), 3, &rows, true);
    let regions = dir.path().join("00003.regions.parquet");
    // A crash between the two writes: the region shard is there (here: garbage), its stats not.
    std::fs::write(&regions, b"not parquet: the writer died").unwrap();

    let mut detector = ContentBoxes::new(8);
    let summary = extract(job(dir.path(), dir.path(), Slice::WHOLE, 8), &mut detector)
        .await
        .unwrap();
    assert_eq!((summary.shards_done, summary.shards_skipped), (1, 0));
    assert_eq!(detector.calls(), 1, "two images of one size, one batch");
    let (_, records) = read_regions(&regions);
    let expected: Vec<RegionRecord> = rows.iter().map(expected_record).collect();
    assert_eq!(records, expected);
    assert!(dir.path().join("00003.regions_stats.json").exists());

    let summary = extract(job(dir.path(), dir.path(), Slice::WHOLE, 8), &mut detector)
        .await
        .unwrap();
    assert_eq!((summary.shards_done, summary.shards_skipped), (0, 1));
    assert_eq!(summary.images_ok + summary.images_failed, 0);
    assert_eq!(
        detector.calls(),
        1,
        "the committed shard is not detected again"
    );
}

#[tokio::test]
async fn a_detect_error_fails_the_run_naming_the_shard_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_pair_shard(dir.path(), 7, &photo_rows(7, &PHOTO_FILES[..1]), true);
    let mut detector = ContentBoxes {
        fail_with: Some("device out of memory"),
        ..ContentBoxes::new(4)
    };
    let error = extract(job(dir.path(), dir.path(), Slice::WHOLE, 4), &mut detector)
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("00007.parquet"), "{message}");
    assert!(message.contains("00007-000000"), "{message}");
    assert!(message.contains("device out of memory"), "{message}");
    assert!(!dir.path().join("00007.regions_stats.json").exists());
    assert!(!dir.path().join("00007.regions.parquet").exists());
}

#[tokio::test]
async fn another_detector_is_refused_at_an_output_it_did_not_start() {
    let dir = tempfile::tempdir().unwrap();
    write_pair_shard(dir.path(), 0, &photo_rows(0, &PHOTO_FILES[..1]), true);
    let mut detector = ContentBoxes::new(4);
    let summary: ExtractSummary =
        extract(job(dir.path(), dir.path(), Slice::WHOLE, 4), &mut detector)
            .await
            .unwrap();
    assert_eq!(summary.shards_done, 1);

    write_pair_shard(dir.path(), 1, &photo_rows(1, &PHOTO_FILES[..1]), true);
    let mut newer = ContentBoxes {
        version: "test-2",
        ..ContentBoxes::new(4)
    };
    let error = extract(job(dir.path(), dir.path(), Slice::WHOLE, 4), &mut newer)
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains(RUN_FILE) && message.contains("test-content-boxes test-1"),
        "{message}"
    );
    assert_eq!(newer.calls(), 0);
    assert!(!dir.path().join("00001.regions.parquet").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_decoded_and_prepared_while_detect_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Nine images of one size (three batches of three): the first `detect` returns only once
    // the second batch is prepared, which a sequential driver would never do.
    let files = ["astronaut.png", "camera.png", "ihc.png"].repeat(3);
    write_pair_shard(dir.path(), 0, &photo_rows(0, &files), true);
    let mut detector = ContentBoxes {
        await_prefetch: true,
        ..ContentBoxes::new(3)
    };
    let summary = extract(job(dir.path(), dir.path(), Slice::WHOLE, 3), &mut detector)
        .await
        .unwrap();
    assert_eq!((summary.images_ok, summary.images_failed), (9, 0));
    assert_eq!(detector.calls(), 3);
}

/// Runs `detector extract ARGS...` as a user would and returns what it printed.
fn run_extract_binary(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_detector"))
        .arg("extract")
        .args(args)
        .output()
        .unwrap()
}

/// The real default detector (CenterNet from the assets) through the `detector` binary, as a user
/// runs it: regions by the bottom-up-attention budget, classes that fit the photos, features of
/// the documented size, a failed row for a corrupt image, and a rerun that skips the shard.
#[test]
fn the_detector_binary_extracts_real_centernet_regions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs");
    std::fs::create_dir_all(&input).unwrap();
    let files = [
        "darknet/horses.jpg",
        "darknet/person.jpg",
        "darknet/giraffe.jpg",
    ];
    let mut rows: Vec<PairRecord> = files
        .iter()
        .enumerate()
        .map(|(row, file)| kept(&format!("00000-{row:06}"), photo_jpeg_sized(file, 512)))
        .collect();
    let (jpeg, w, h) = photo_jpeg_sized(files[0], 512);
    rows.push(kept("00000-corrupt", (jpeg[..100].to_vec(), w, h)));
    write_pair_shard(&input, 0, &rows, true);
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../assets/detectors/centernet.json"
    );
    let run = || {
        let input = input.to_str().unwrap();
        let out = run_extract_binary(&[
            "--input",
            input,
            "--model",
            model,
            "--batch-size",
            "2",
            "--no-progress",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let summary = run();
    assert_eq!(summary["shards_done"], 1, "{summary}");
    assert_eq!(
        (
            summary["images_ok"].as_u64(),
            summary["images_failed"].as_u64()
        ),
        (Some(3), Some(1))
    );

    let (info, records) = read_regions(&input.join("00000.regions.parquet"));
    assert_eq!(info.name, detector::centernet::DETECTOR_NAME);
    assert_eq!(info.feature_dim, detector::centernet::FEATURE_DIM);
    assert_eq!(info.num_classes, 80);
    assert_eq!(records.len(), 4);
    let label = |id: u32| detector::centernet::LABELS[id as usize];
    // The photos' main objects among each image's confident regions (as the tfjs oracle sees
    // them: horses; person, dog; zebra, giraffe).
    let expected: [&[&str]; 3] = [&["horse"], &["person", "dog"], &["giraffe"]];
    for (record, wanted) in records.iter().zip(expected) {
        assert_eq!(record.status, RegionStatus::Ok, "{}", record.key);
        let n = record.boxes.len();
        assert!((10..=100).contains(&n), "{}: {n} boxes", record.key);
        let confident: Vec<&str> = record
            .class_ids
            .iter()
            .zip(&record.class_scores)
            .filter(|(_, s)| **s >= 0.2)
            .map(|(c, _)| label(*c))
            .collect();
        for name in wanted {
            assert!(confident.contains(name), "{}: {confident:?}", record.key);
        }
        assert!(record.class_scores.windows(2).all(|p| p[0] >= p[1]));
        let (w, h) = record.image_size.unwrap();
        assert!(
            record
                .boxes
                .iter()
                .all(|b| b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f32 && b[3] <= h as f32),
            "{}: boxes inside the image",
            record.key
        );
        assert_eq!(record.features.len(), n * info.feature_dim);
        assert!(record.features.iter().all(|v| v.to_f32().is_finite()));
    }
    assert_ne!(
        records[0].features[..info.feature_dim],
        records[1].features[..info.feature_dim],
        "different photos pool different features"
    );
    assert_eq!(records[3].status, RegionStatus::Failed);

    let again = run();
    assert_eq!(
        (
            again["shards_done"].as_u64(),
            again["shards_skipped"].as_u64()
        ),
        (Some(0), Some(1)),
        "{again}"
    );
}

/// The paper's detector (BUTD) through the same binary, on the tiny checkpoint the BUTD tests
/// build (`tools/butd_reference.py`, real structure, random weights): attribute columns, the
/// configured feature size and the 10..100 region budget reach the shard.
#[test]
fn the_detector_binary_extracts_butd_regions_with_attributes() {
    use detector::butd::ButdConfig;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs");
    std::fs::create_dir_all(&input).unwrap();
    write_pair_shard(&input, 0, &photo_rows(0, &PHOTO_FILES[..2]), true);
    let config = ButdConfig::tiny();
    let config_file = dir.path().join("butd-tiny.toml");
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
    let checkpoint = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/butd_tiny.safetensors"
    );
    let input_uri = input.to_str().unwrap();
    let out = run_extract_binary(&[
        "--input",
        input_uri,
        "--no-progress",
        "--detector",
        "butd",
        "--checkpoint",
        checkpoint,
        "--butd-config",
        config_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (info, records) = read_regions(&input.join("00000.regions.parquet"));
    assert_eq!(info.name, detector::butd::region_detector::DETECTOR_NAME);
    assert_eq!(info.feature_dim, config.feature_dim());
    assert_eq!(info.num_classes, config.num_classes);
    assert_eq!(info.num_attributes, Some(config.num_attributes));
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record.status, RegionStatus::Ok, "{}", record.key);
        let n = record.boxes.len();
        assert!((config.min_boxes..=config.max_boxes).contains(&n), "{n}");
        let attributes = record.attribute_ids.as_ref().unwrap();
        assert_eq!(attributes.len(), n);
        assert!(
            attributes
                .iter()
                .all(|&a| (a as usize) < config.num_attributes)
        );
        assert!(
            record
                .class_ids
                .iter()
                .all(|&c| (c as usize) < config.num_classes)
        );
        assert_eq!(record.features.len(), n * info.feature_dim);
    }
    // Without a checkpoint the flag parser refuses the BUTD detector.
    let out = run_extract_binary(&["--input", input_uri, "--detector", "butd"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--checkpoint"));
}
