//! The pre-training data stream on small real shards written with the `schemas` writers and the
//! real MiniLM vocabulary: the key join, row filtering, caps, deterministic order, rank split,
//! exact resume, detector checks and dynamic batches.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use schemas::pair_shard::{self, PairRecord, Status};
use schemas::region_features::{self, DetectorInfo, RegionRecord, RegionStatus};
use trainer::batch::PretrainSample;
use trainer::data::{
    Batcher, DataCursor, DataLimits, KeyedSample, Prefetcher, SampleStream, ShardPair,
    StreamOptions, list_shards, read_shard, sample_tokens,
};
use wordpiece::WordPiece;

const DIM: usize = 4;
const SHARDS: usize = 4;
/// Usable rows per shard (see [`write_shard`]).
const USABLE: usize = 5;
const IMAGE: (u32, u32) = (100, 50);
const LONG_TEXT: &str = "a very long caption about a small brown dog that runs across a wide \
    green field of grass next to an old red barn while the sun sets slowly behind the hills";

fn vocab() -> WordPiece {
    let dir = std::env::var_os("IMAGEBERT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"));
    let path = dir.join("minilm/vocab.txt");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-assets",
        path.display()
    );
    WordPiece::from_file(&path).unwrap()
}

fn detector(name: &str, feature_dim: usize) -> DetectorInfo {
    DetectorInfo {
        name: name.into(),
        version: "test-1".into(),
        feature_dim,
        num_classes: 80,
        num_attributes: None,
    }
}

/// The numeric id of key `s{shard}-r{row}`: `shard * 100 + row`.
fn key(shard: usize, row: usize) -> String {
    format!("s{shard}-r{row}")
}

fn key_id(key: &str) -> u32 {
    let (shard, row) = key[1..].split_once("-r").unwrap();
    shard.parse::<u32>().unwrap() * 100 + row.parse::<u32>().unwrap()
}

fn pair(key: String, status: Status, text: Option<&str>) -> PairRecord {
    PairRecord {
        text: text.map(str::to_owned),
        drop_reason: (status != Status::Kept).then(|| "too_small".into()),
        http_status: Some(200),
        width: Some(IMAGE.0),
        height: Some(IMAGE.1),
        ..PairRecord::new(key, "https://example.com/a.jpg", status, "urls.txt")
    }
}

/// Box `b` of a pair: `(b, b, b + 10, b + 20)` pixels.
fn pixel_box(b: usize) -> [f32; 4] {
    let b = b as f32;
    [b, b, b + 10.0, b + 20.0]
}

/// Region row whose classes and features encode the key: class `id * 1000 + b`, features
/// `[id, b, 2, 3, 0, ...]` (`dim` values) per box `b`.
fn regions(key: String, boxes: usize, dim: usize) -> RegionRecord {
    let id = key_id(&key);
    RegionRecord {
        key,
        status: RegionStatus::Ok,
        error_message: None,
        image_size: Some(IMAGE),
        boxes: (0..boxes).map(pixel_box).collect(),
        class_ids: (0..boxes as u32).map(|b| id * 1000 + b).collect(),
        class_scores: (0..boxes).map(|b| 0.9 - b as f32 * 0.01).collect(),
        attribute_ids: None,
        attribute_scores: None,
        features: (0..boxes)
            .flat_map(|b| {
                let mut f = vec![0.0; dim];
                f[..4].copy_from_slice(&[id as f32, b as f32, 2.0, 3.0]);
                f
            })
            .map(f16::from_f32)
            .collect(),
    }
}

/// Writes shard `shard` into `dir`: rows 0..5 usable (row 1 has 7 boxes, row 2 a long caption),
/// row 5 dropped (with a region row), row 6 kept without region row, row 7 kept with a failed
/// region row, row 8 kept with zero boxes, row 9 kept without text.
fn write_shard(dir: &Path, shard: usize, detector: &DetectorInfo, with_regions: bool) {
    let dim = detector.feature_dim;
    let mut pairs = Vec::new();
    let mut region_rows = Vec::new();
    for row in 0..USABLE {
        let text = if row == 2 {
            LONG_TEXT.to_owned()
        } else {
            format!("dog {row} of shard {shard}")
        };
        pairs.push(pair(key(shard, row), Status::Kept, Some(&text)));
        let boxes = if row == 1 { 7 } else { 1 + row % 3 };
        region_rows.push(regions(key(shard, row), boxes, dim));
    }
    pairs.push(pair(
        key(shard, 5),
        Status::Dropped,
        Some("a dropped photo"),
    ));
    region_rows.push(regions(key(shard, 5), 2, dim));
    pairs.push(pair(key(shard, 6), Status::Kept, Some("no regions at all")));
    pairs.push(pair(key(shard, 7), Status::Kept, Some("regions failed")));
    region_rows.push(RegionRecord {
        status: RegionStatus::Failed,
        error_message: Some("undecodable".into()),
        ..regions(key(shard, 7), 0, dim)
    });
    pairs.push(pair(key(shard, 8), Status::Kept, Some("nothing detected")));
    region_rows.push(regions(key(shard, 8), 0, dim));
    pairs.push(pair(key(shard, 9), Status::Kept, None));
    region_rows.push(regions(key(shard, 9), 1, dim));
    // Region rows in another order than pair rows: the join is by key.
    region_rows.reverse();

    let name = format!("{shard:05}.parquet");
    pair_shard::write(&name, File::create(dir.join(&name)).unwrap(), &pairs).unwrap();
    if with_regions {
        let name = format!("{shard:05}.regions.parquet");
        let file = File::create(dir.join(&name)).unwrap();
        region_features::write(&name, file, detector, &region_rows).unwrap();
    }
}

fn dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for shard in 0..SHARDS {
        write_shard(dir.path(), shard, &detector("centernet-test", DIM), true);
    }
    // Files that are not shards are ignored.
    std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
    std::fs::write(dir.path().join("00000.stats.json"), "{}").unwrap();
    dir
}

fn stream(dir: &Path, options: StreamOptions) -> SampleStream {
    SampleStream::new(
        list_shards(dir.to_str().unwrap()).unwrap(),
        vocab(),
        options,
    )
    .unwrap()
}

fn options(seed: u64, rank: usize, world_size: usize) -> StreamOptions {
    StreamOptions {
        seed,
        rank,
        world_size,
        limits: DataLimits {
            max_text_len: 12,
            max_regions: 5,
        },
    }
}

fn take(stream: &mut SampleStream, n: usize) -> Vec<KeyedSample> {
    (0..n).map(|_| stream.next_keyed().unwrap()).collect()
}

fn keys(samples: &[KeyedSample]) -> Vec<String> {
    samples.iter().map(|s| s.key.clone()).collect()
}

/// Every region of `sample` comes from key `key`'s region row, in order.
fn assert_joined(key: &str, sample: &PretrainSample) {
    let id = key_id(key);
    assert!(sample.regions() >= 1, "{key}: no regions");
    assert_eq!(
        sample.region_features.len(),
        sample.regions() * DIM,
        "{key}"
    );
    assert_eq!(sample.region_classes.len(), sample.regions(), "{key}");
    for b in 0..sample.regions() {
        assert_eq!(
            sample.region_classes[b],
            id * 1000 + b as u32,
            "{key} box {b}"
        );
        let f = &sample.region_features[b * DIM..(b + 1) * DIM];
        assert_eq!(f, &[id as f32, b as f32, 2.0, 3.0], "{key} box {b}");
        let [x1, y1, x2, y2] = pixel_box(b);
        let (w, h) = (IMAGE.0 as f32, IMAGE.1 as f32);
        let expected = [
            x1 / w,
            y1 / h,
            x2 / w,
            y2 / h,
            (x2 - x1) * (y2 - y1) / (w * h),
        ];
        assert_eq!(sample.region_boxes[b], expected, "{key} box {b}");
    }
}

#[test]
fn lists_shards_in_number_order() {
    let dir = dataset();
    let shards = list_shards(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(shards.len(), SHARDS);
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(shard.pairs, dir.path().join(format!("{i:05}.parquet")));
        assert_eq!(
            shard.regions,
            dir.path().join(format!("{i:05}.regions.parquet"))
        );
    }
}

#[test]
fn missing_region_shard_is_an_error_naming_both_files() {
    let dir = dataset();
    write_shard(dir.path(), 7, &detector("centernet-test", DIM), false);
    let err = format!(
        "{:#}",
        list_shards(dir.path().to_str().unwrap()).unwrap_err()
    );
    assert!(err.contains("00007.regions.parquet"), "{err}");
    assert!(err.contains("00007.parquet"), "{err}");
}

#[test]
fn join_filters_rows_and_caps_text_and_regions() {
    let dir = dataset();
    let shards = list_shards(dir.path().to_str().unwrap()).unwrap();
    let tokenizer = vocab();
    let limits = DataLimits {
        max_text_len: 12,
        max_regions: 5,
    };
    let read = read_shard(&shards[2], &tokenizer, &limits, None).unwrap();
    assert_eq!(read.detector, detector("centernet-test", DIM));
    let got: Vec<&str> = read.pairs.iter().map(|p| p.key.as_str()).collect();
    let want: Vec<String> = (0..USABLE).map(|row| key(2, row)).collect();
    assert_eq!(got, want, "pair-shard order, usable rows only");
    assert_eq!(read.counts.pair_rows, 10);
    assert_eq!(read.counts.not_kept, 1);
    assert_eq!(read.counts.empty_text, 1);
    assert_eq!(
        read.counts.without_regions, 3,
        "no row, failed row, zero boxes"
    );
    assert_eq!(read.counts.samples, USABLE);
    assert_eq!(read.counts.regions_capped, 1);

    let special = tokenizer.special();
    for pair in &read.pairs {
        let sample = pair.to_sample();
        assert_joined(&pair.key, &sample);
        assert_eq!(sample.text_ids[0], special.cls);
        assert_eq!(*sample.text_ids.last().unwrap(), special.sep);
        assert!(sample.text_ids.len() <= limits.max_text_len);
    }
    // Row 1 has 7 boxes: the first 5 are kept.
    assert_eq!(
        read.pairs[1].region_classes,
        vec![201000, 201001, 201002, 201003, 201004]
    );
    // Row 2's long caption is cut to 12 ids ending in [SEP]; a short one is not cut.
    assert_eq!(read.pairs[2].text_ids.len(), 12);
    assert_eq!(
        read.pairs[0].text_ids,
        tokenizer.encode("dog 0 of shard 2", 64)
    );
    assert!(read.pairs[0].text_ids.len() < 12);

    // Without caps, the paper's defaults keep everything here.
    let read = read_shard(&shards[2], &tokenizer, &DataLimits::default(), None).unwrap();
    assert_eq!(read.pairs[1].region_boxes.len(), 7);
    assert_eq!(
        read.pairs[2].text_ids,
        tokenizer.encode(LONG_TEXT, DataLimits::default().max_text_len)
    );
}

#[test]
fn stream_yields_every_usable_pair_once_per_epoch() {
    let dir = dataset();
    let mut s = stream(dir.path(), options(7, 0, 1));
    let all: HashSet<String> = (0..SHARDS)
        .flat_map(|shard| (0..USABLE).map(move |row| key(shard, row)))
        .collect();
    for epoch in 0..3u64 {
        let samples = take(&mut s, SHARDS * USABLE);
        assert!(samples.iter().all(|k| k.at.epoch == epoch));
        let seen: HashSet<String> = keys(&samples).into_iter().collect();
        assert_eq!(seen, all, "epoch {epoch}");
        for k in &samples {
            assert_joined(&k.key, &k.sample);
            assert!(k.sample.text_ids.len() <= 12);
            assert!(k.sample.regions() <= 5);
        }
    }
    assert_eq!(s.counts().without_regions, 3 * SHARDS * 3);
}

#[test]
fn order_is_deterministic_per_seed() {
    let dir = dataset();
    let n = 3 * SHARDS * USABLE;
    let a = keys(&take(&mut stream(dir.path(), options(1, 0, 1)), n));
    let b = keys(&take(&mut stream(dir.path(), options(1, 0, 1)), n));
    let c = keys(&take(&mut stream(dir.path(), options(2, 0, 1)), n));
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a, c, "another seed, another order");
    let per_epoch = SHARDS * USABLE;
    assert_ne!(a[..per_epoch], a[per_epoch..2 * per_epoch], "epochs differ");
}

#[test]
fn ranks_split_each_epoch_into_disjoint_halves() {
    let dir = dataset();
    let all: HashSet<String> = (0..SHARDS)
        .flat_map(|shard| (0..USABLE).map(move |row| key(shard, row)))
        .collect();
    let mut ranks = [
        stream(dir.path(), options(5, 0, 2)),
        stream(dir.path(), options(5, 1, 2)),
    ];
    let mut pending: [Option<KeyedSample>; 2] = [None, None];
    for epoch in 0..3u64 {
        let mut seen: Vec<HashSet<String>> = Vec::new();
        for (rank, s) in ranks.iter_mut().enumerate() {
            let mut keys = HashSet::new();
            if let Some(k) = pending[rank].take() {
                keys.insert(k.key);
            }
            loop {
                let k = s.next_keyed().unwrap();
                if k.at.epoch != epoch {
                    assert_eq!(k.at.epoch, epoch + 1);
                    pending[rank] = Some(k);
                    break;
                }
                assert!(
                    keys.insert(k.key.clone()),
                    "{} twice in epoch {epoch}",
                    k.key
                );
            }
            assert_eq!(keys.len(), 2 * USABLE, "rank {rank} gets 2 of 4 shards");
            seen.push(keys);
        }
        assert!(seen[0].is_disjoint(&seen[1]), "epoch {epoch}");
        let union: HashSet<String> = seen[0].union(&seen[1]).cloned().collect();
        assert_eq!(union, all, "epoch {epoch}");
    }
    // Ranks get different shards in different epochs.
    let s = &ranks[0];
    assert!((0..8).any(|e| s.rank_shards(e) != s.rank_shards(0)));
}

#[test]
fn too_few_shards_for_the_ranks_is_an_error() {
    let dir = dataset();
    let shards = list_shards(dir.path().to_str().unwrap()).unwrap();
    let err = SampleStream::new(shards.clone(), vocab(), options(0, 0, 5))
        .err()
        .unwrap();
    assert!(err.to_string().contains("4 shards for 5 ranks"), "{err}");
    assert!(SampleStream::new(shards, vocab(), options(0, 2, 2)).is_err());
}

#[test]
fn resume_continues_exactly() {
    let dir = dataset();
    for (world_size, rank) in [(1, 0), (2, 1)] {
        let opts = options(11, rank, world_size);
        let per_epoch = SHARDS * USABLE / world_size;
        let reference = take(&mut stream(dir.path(), opts), 3 * per_epoch);
        // 7 in; then across an epoch boundary; then right at one.
        for taken in [7, per_epoch - 3, per_epoch, 2 * per_epoch - 1] {
            let mut s = stream(dir.path(), opts);
            take(&mut s, taken);
            let cursor = s.cursor();
            let saved = serde_json::to_string(&cursor).unwrap();
            drop(s);
            let cursor: DataCursor = serde_json::from_str(&saved).unwrap();
            let shards = list_shards(dir.path().to_str().unwrap()).unwrap();
            let mut resumed = SampleStream::resume(cursor, shards, vocab(), opts).unwrap();
            let next = take(&mut resumed, 10);
            assert_eq!(
                next,
                reference[taken..taken + 10],
                "world {world_size} rank {rank}, resumed after {taken}"
            );
        }
        assert!(
            reference[per_epoch - 3..per_epoch + 7]
                .iter()
                .any(|k| k.at.epoch == 1)
        );
    }
}

#[test]
fn detector_mismatch_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), 0, &detector("centernet-test", DIM), true);
    write_shard(dir.path(), 1, &detector("centernet-test", DIM), true);
    write_shard(dir.path(), 2, &detector("other-detector", DIM), true);
    let shards = list_shards(dir.path().to_str().unwrap()).unwrap();
    let err = format!(
        "{:#}",
        SampleStream::new(shards.clone(), vocab(), options(0, 0, 1))
            .err()
            .unwrap()
    );
    assert!(err.contains("00002.regions.parquet"), "{err}");
    assert!(err.contains("other-detector"), "{err}");

    // The same check when reading one shard against the dataset's detector.
    let expected = detector("centernet-test", DIM);
    let limits = DataLimits::default();
    let err = read_shard(
        &shards[2],
        &vocab(),
        &limits,
        Some((&expected, shards[0].regions.as_str())),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("00002.regions.parquet"),
        "{err:#}"
    );

    // Another feature length is refused as well.
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), 0, &detector("centernet-test", DIM), true);
    write_shard(dir.path(), 1, &detector("centernet-test", 8), true);
    let shards: Vec<ShardPair> = list_shards(dir.path().to_str().unwrap()).unwrap();
    let err = format!(
        "{:#}",
        SampleStream::new(shards, vocab(), options(0, 0, 1))
            .err()
            .unwrap()
    );
    assert!(
        err.contains("00001.regions.parquet") && err.contains("feature_dim 8"),
        "{err}"
    );
}

#[test]
fn dynamic_batches_respect_both_limits() {
    let dir = dataset();
    let opts = options(3, 0, 1);
    let (max_samples, max_tokens) = (4, 40);
    let mut batcher = Batcher::new(stream(dir.path(), opts));
    let batches: Vec<Vec<KeyedSample>> = (0..12)
        .map(|_| batcher.next_keyed_batch(max_samples, max_tokens).unwrap())
        .collect();
    let flat: Vec<KeyedSample> = batches.iter().flatten().cloned().collect();
    let reference = take(&mut stream(dir.path(), opts), flat.len());
    assert_eq!(flat, reference, "batches are the stream, cut");

    let tokens = |b: &[KeyedSample]| b.iter().map(|k| sample_tokens(&k.sample)).sum::<usize>();
    let mut by_tokens = 0;
    for pair in batches.windows(2) {
        let (batch, next) = (&pair[0], &pair[1]);
        assert!(!batch.is_empty() && batch.len() <= max_samples);
        assert!(batch.len() == 1 || tokens(batch) <= max_tokens);
        // Maximal: the next sample would have broken a limit.
        let full = batch.len() == max_samples;
        let over = tokens(batch) + sample_tokens(&next[0].sample) > max_tokens;
        assert!(
            full || over,
            "batch of {} could have taken one more",
            batch.len()
        );
        by_tokens += usize::from(!full);
    }
    assert!(by_tokens > 0, "the token limit cut some batches");
    assert!(batches.iter().any(|b| b.len() > 1));

    // The batcher's cursor resumes exactly, even while it holds a sample back.
    let mut batcher = Batcher::new(stream(dir.path(), opts));
    let mut consumed = 0;
    for _ in 0..3 {
        consumed += batcher.next_batch(max_samples, max_tokens).unwrap().len();
    }
    let cursor = batcher.cursor();
    let expected = batcher.next_batch(max_samples, max_tokens).unwrap();
    let shards = list_shards(dir.path().to_str().unwrap()).unwrap();
    let mut resumed = Batcher::new(SampleStream::resume(cursor, shards, vocab(), opts).unwrap());
    assert_eq!(
        resumed.next_batch(max_samples, max_tokens).unwrap(),
        expected
    );
    assert_eq!(
        expected[0], reference[consumed].sample,
        "the next batch starts where the last ended"
    );

    // A larger budget makes larger batches.
    let mut big = Batcher::new(stream(dir.path(), opts));
    assert_eq!(big.next_batch(100, 10_000).unwrap().len(), 100);
}

#[test]
fn prefetched_batches_and_cursors_equal_the_batcher_s() {
    let dir = dataset();
    let opts = options(5, 0, 1);
    let mut direct = Batcher::new(stream(dir.path(), opts));
    let mut prefetched =
        Prefetcher::spawn(Batcher::new(stream(dir.path(), opts)), 3, 40, 2).unwrap();
    assert_eq!(prefetched.cursor(), direct.cursor());
    // Across epochs: the worker reads ahead, the cursor follows what was handed out.
    for _ in 0..SHARDS * USABLE {
        let expected = direct.next_batch(3, 40).unwrap();
        assert_eq!(prefetched.next_batch().unwrap(), expected);
        assert_eq!(prefetched.cursor(), direct.cursor());
    }
    assert!(prefetched.cursor().epoch >= 1);
}
