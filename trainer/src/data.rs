//! Pre-training data: pair shards joined with their region-feature shards, streamed as
//! [`PretrainSample`]s in a deterministic, resumable order, and grouped into dynamic batches.
//!
//! # Dataset layout
//!
//! A dataset is one location: a local folder or object storage (`s3://`, `gs://`, `az://`,
//! through the `storage` crate; credentials from the environment). Pair shards are named `NNNNN.parquet` (digits only, as
//! `pipeline ingest` writes them) and each has its region-feature shard `NNNNN.regions.parquet`
//! beside it (as `detector extract` writes them). Other files at the location (stats side files,
//! `manifest.json`, Parquet files with other names) are ignored. [`list_shards`] finds the pairs.
//!
//! # Which rows become samples
//!
//! A pair becomes a sample when its status is `kept`, its text is not empty, and its region row
//! has status `ok` with at least one box. Kept pairs without such a region row are counted
//! ([`ShardCounts::without_regions`]), not treated as errors. Text becomes `[CLS] text [SEP]` cut
//! to [`DataLimits::max_text_len`] ids; regions are cut to the first
//! [`DataLimits::max_regions`] (the detector stores them by descending confidence, so these are
//! the most confident ones, as the paper's "top-100 ROIs").
//!
//! # Order, ranks and exact resume
//!
//! [`SampleStream`] is endless: epoch after epoch. Each epoch it shuffles the list of shards with
//! a ChaCha8 generator seeded from `(seed, epoch)`; rank `r` of `w` takes every `w`-th shard of
//! that order starting at `r`. Within a shard, the usable rows are permuted with a generator
//! seeded from `(seed, epoch, shard index)`. The whole position is therefore three numbers,
//! [`DataCursor`]: epoch, position in this rank's shard list, row in the shard's permutation.
//! [`SampleStream::resume`] from a saved cursor yields exactly the samples an uninterrupted stream
//! would have yielded, which is what exact resume of training relies on.
//!
//! Trade-off: permuting whole shards (rather than shuffling through a bounded buffer, as
//! WebDataset-style loaders do) makes the cursor trivial and resume exact, at the cost of holding
//! one shard's samples in memory (region features stay `f16` until a sample is handed out:
//! about `rows × regions × feature_dim × 2` bytes) and of mixing rows only within a shard and
//! shards only at shard granularity. Keep shards to a few thousand rows.
//!
//! Ranks get whole shards, so when the shard count is not a multiple of the world size some ranks
//! get one shard more per epoch and ranks reach epoch boundaries at different steps; each rank's
//! cursor is its own. Fewer shards than ranks is refused: re-shard the dataset.
//!
//! [`Prefetcher`] runs a [`Batcher`] on a worker thread, a few batches ahead, so shard downloads,
//! the join and tokenization overlap training; its cursor stays that of the batches handed out.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use half::f16;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schemas::pair_shard::{self, Status};
use schemas::region_features::{self, DetectorInfo, RegionReader, RegionRecord, RegionStatus};
use serde::{Deserialize, Serialize};
use storage::Location;

use crate::batch::PretrainSample;
use wordpiece::WordPiece;

/// The paper's text budget: `[CLS]` + caption + `[SEP]` in at most 44 positions.
pub const DEFAULT_MAX_TEXT_LEN: usize = 44;
/// The paper's image budget: the top 100 regions.
pub const DEFAULT_MAX_REGIONS: usize = 100;

/// A pair shard and the region-feature shard made from it, in one dataset location.
#[derive(Debug, Clone)]
pub struct ShardPair {
    /// The pair shard's URI (`.../NNNNN.parquet`).
    pub pairs: String,
    /// Its region-feature shard's URI (`.../NNNNN.regions.parquet`).
    pub regions: String,
    location: Location,
    pairs_name: String,
    regions_name: String,
}

impl ShardPair {
    /// The pair for pair shard `name` (`NNNNN.parquet`) in `location`, with the region shard
    /// named by the convention.
    pub fn new(location: &Location, name: &str) -> Result<Self> {
        pair_shard::file_number(name).with_context(|| {
            format!(
                "{} is not named like a pair shard (NNNNN.parquet)",
                location.uri_of(name)
            )
        })?;
        let regions_name = region_features::file_name_for(name);
        Ok(Self {
            pairs: location.uri_of(name),
            regions: location.uri_of(&regions_name),
            location: location.clone(),
            pairs_name: name.to_owned(),
            regions_name,
        })
    }

    fn read_pairs(&self) -> Result<Bytes> {
        self.location
            .get_blocking(&self.pairs_name)
            .with_context(|| format!("reading pair shard {}", self.pairs))
    }

    fn read_regions(&self) -> Result<Bytes> {
        self.location
            .get_blocking(&self.regions_name)
            .with_context(|| format!("reading region-feature shard {}", self.regions))
    }
}

/// Lists the shard pairs of the dataset at `dataset` (a local folder, `file://`, `s3://`,
/// `gs://` or `az://`), in shard-number order.
///
/// Refuses a dataset without pair shards, and a pair shard whose region shard is missing (the
/// error names both files).
pub fn list_shards(dataset: &str) -> Result<Vec<ShardPair>> {
    let location = Location::parse(dataset)?;
    let names = location
        .list_blocking()
        .with_context(|| format!("listing dataset {dataset}"))?;
    let present: HashSet<&str> = names.iter().map(String::as_str).collect();
    // Region shards (`NNNNN.regions.parquet`) and unrelated files are skipped.
    let mut found: Vec<(u64, &str)> = names
        .iter()
        .filter_map(|name| Some((pair_shard::file_number(name)?, name.as_str())))
        .collect();
    ensure!(
        !found.is_empty(),
        "dataset {dataset} holds no pair shards (NNNNN.parquet)"
    );
    found.sort();
    found
        .into_iter()
        .map(|(_, name)| {
            let pair = ShardPair::new(&location, name)?;
            ensure!(
                present.contains(pair.regions_name.as_str()),
                "pair shard {} has no region-feature shard {}: run `detector extract` on it",
                pair.pairs,
                pair.regions
            );
            Ok(pair)
        })
        .collect()
}

/// How much text and how many regions one sample may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataLimits {
    /// Most WordPiece ids per sample, `[CLS]` and `[SEP]` included (at least 2).
    pub max_text_len: usize,
    /// Most regions per sample (at least 1); the most confident ones are kept.
    pub max_regions: usize,
}

impl Default for DataLimits {
    fn default() -> Self {
        Self {
            max_text_len: DEFAULT_MAX_TEXT_LEN,
            max_regions: DEFAULT_MAX_REGIONS,
        }
    }
}

impl DataLimits {
    fn check(&self) -> Result<()> {
        ensure!(
            self.max_text_len >= 2,
            "max_text_len is {}: it must leave room for [CLS] and [SEP]",
            self.max_text_len
        );
        ensure!(self.max_regions >= 1, "max_regions must be at least 1");
        Ok(())
    }
}

/// One joined pair as held in memory: like [`PretrainSample`] but with `f16` features.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedPair {
    /// The pair's key, shared by the pair row and the region row.
    pub key: String,
    /// `[CLS] caption [SEP]` WordPiece ids.
    pub text_ids: Vec<u32>,
    /// Region features as stored, `regions × feature_dim`.
    pub region_features: Vec<f16>,
    /// The paper's 5-d box per region.
    pub region_boxes: Vec<[f32; 5]>,
    /// Detector class per region.
    pub region_classes: Vec<u32>,
}

impl JoinedPair {
    /// The sample with features widened to `f32`.
    pub fn to_sample(&self) -> PretrainSample {
        PretrainSample {
            text_ids: self.text_ids.clone(),
            region_features: self.region_features.iter().map(|v| v.to_f32()).collect(),
            region_boxes: self.region_boxes.clone(),
            region_classes: self.region_classes.clone(),
        }
    }
}

/// One image's regions as the trainer uses them: `f16` features, the paper's 5-d boxes, classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// Features as stored, `regions × feature_dim`.
    pub features: Vec<f16>,
    /// The paper's 5-d box per region.
    pub boxes: Vec<[f32; 5]>,
    /// Detector class per region.
    pub classes: Vec<u32>,
}

impl Regions {
    /// The first (most confident) `max_regions` regions of `record`, whose features are
    /// `feature_dim` long, and whether any were cut.
    pub fn first(record: RegionRecord, max_regions: usize, feature_dim: usize) -> (Self, bool) {
        let n = record.boxes.len().min(max_regions);
        let mut boxes = record.normalized_boxes();
        boxes.truncate(n);
        let mut classes = record.class_ids;
        classes.truncate(n);
        let mut features = record.features;
        features.truncate(n * feature_dim);
        let capped = n < record.boxes.len();
        (
            Self {
                features,
                boxes,
                classes,
            },
            capped,
        )
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// True when there is no region.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
}

/// What became of the rows of one shard pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCounts {
    /// Rows in the pair shard.
    pub pair_rows: usize,
    /// Pairs whose status is not `kept`.
    pub not_kept: usize,
    /// Kept pairs without text (or only white space).
    pub empty_text: usize,
    /// Kept pairs with text but no `ok` region row with at least one box.
    pub without_regions: usize,
    /// Samples made.
    pub samples: usize,
    /// Samples whose regions were cut to the limit.
    pub regions_capped: usize,
}

impl ShardCounts {
    fn add(&mut self, other: &ShardCounts) {
        self.pair_rows += other.pair_rows;
        self.not_kept += other.not_kept;
        self.empty_text += other.empty_text;
        self.without_regions += other.without_regions;
        self.samples += other.samples;
        self.regions_capped += other.regions_capped;
    }
}

/// The samples of one shard pair, in pair-shard row order.
#[derive(Debug, Clone)]
pub struct ShardSamples {
    /// The detector that made the region shard.
    pub detector: DetectorInfo,
    /// One entry per usable pair.
    pub pairs: Vec<JoinedPair>,
    /// What became of the rows.
    pub counts: ShardCounts,
}

/// Reads the detector description of a shard pair's region shard.
pub fn region_detector(shard: &ShardPair) -> Result<DetectorInfo> {
    let reader = RegionReader::open(&shard.regions, shard.read_regions()?)?;
    Ok(reader.detector)
}

/// Errors unless `found` (from region shard `file`) has the name and shapes of `expected` (from
/// region shard `expected_file`). The detector version is not compared.
pub fn check_detector(
    expected: &DetectorInfo,
    expected_file: &str,
    found: &DetectorInfo,
    file: &str,
) -> Result<()> {
    let same = found.name == expected.name
        && found.feature_dim == expected.feature_dim
        && found.num_classes == expected.num_classes;
    ensure!(
        same,
        "region-feature shard {} was made by detector `{}` (feature_dim {}, num_classes {}), \
         but {} by `{}` (feature_dim {}, num_classes {}): one dataset needs one detector",
        file,
        found.name,
        found.feature_dim,
        found.num_classes,
        expected_file,
        expected.name,
        expected.feature_dim,
        expected.num_classes,
    );
    Ok(())
}

/// Checks that every region shard was made by the same detector as the first one (name, feature
/// length and class count) and returns that detector.
pub fn check_detectors(shards: &[ShardPair]) -> Result<DetectorInfo> {
    let Some(first) = shards.first() else {
        bail!("no shards given");
    };
    let expected = region_detector(first)?;
    for shard in &shards[1..] {
        let found = region_detector(shard)?;
        check_detector(&expected, &first.regions, &found, &shard.regions)?;
    }
    Ok(expected)
}

/// Reads one shard pair and joins its rows by key into samples (see the module docs for which
/// rows are used). `expected`, when given, is the dataset's detector and the file it came from;
/// a region shard of another detector is refused.
pub fn read_shard(
    shard: &ShardPair,
    tokenizer: &WordPiece,
    limits: &DataLimits,
    expected: Option<(&DetectorInfo, &str)>,
) -> Result<ShardSamples> {
    limits.check()?;
    let (detector, region_rows) =
        RegionReader::open(&shard.regions, shard.read_regions()?)?.read_all()?;
    if let Some((expected, expected_file)) = expected {
        check_detector(expected, expected_file, &detector, &shard.regions)?;
    }
    let mut regions = HashMap::with_capacity(region_rows.len());
    for record in region_rows {
        if record.status != RegionStatus::Ok || record.boxes.is_empty() {
            continue;
        }
        if regions.contains_key(&record.key) {
            bail!(
                "region-feature shard {} holds key `{}` twice",
                shard.regions,
                record.key
            );
        }
        regions.insert(record.key.clone(), record);
    }

    let pair_rows = pair_shard::read(&shard.pairs, shard.read_pairs()?)?;
    let dim = detector.feature_dim;
    let mut counts = ShardCounts {
        pair_rows: pair_rows.len(),
        ..ShardCounts::default()
    };
    let mut pairs = Vec::new();
    for pair in pair_rows {
        if pair.status != Status::Kept {
            counts.not_kept += 1;
            continue;
        }
        let Some(text) = pair.text.as_deref().filter(|t| !t.trim().is_empty()) else {
            counts.empty_text += 1;
            continue;
        };
        let Some(region) = regions.remove(&pair.key) else {
            counts.without_regions += 1;
            continue;
        };
        let (kept, capped) = Regions::first(region, limits.max_regions, dim);
        counts.regions_capped += usize::from(capped);
        pairs.push(JoinedPair {
            text_ids: tokenizer.encode(text, limits.max_text_len),
            key: pair.key,
            region_features: kept.features,
            region_boxes: kept.boxes,
            region_classes: kept.classes,
        });
    }
    counts.samples = pairs.len();
    tracing::debug!(
        pairs = %shard.pairs,
        ?counts,
        "read shard"
    );
    Ok(ShardSamples {
        detector,
        pairs,
        counts,
    })
}

/// A position in a [`SampleStream`]: the next sample it hands out. Save it with a checkpoint and
/// give it to [`SampleStream::resume`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataCursor {
    /// Pass over the data, from 0.
    pub epoch: u64,
    /// Index into this rank's shard list of that epoch.
    pub shard_position: usize,
    /// Index into the shard's row permutation.
    pub row: usize,
}

/// Where a stream's order comes from. A resumed stream must get the same options, shard list
/// and vocabulary as the one that saved the cursor, or it continues somewhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Seed of every shuffle.
    pub seed: u64,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of data-parallel processes.
    pub world_size: usize,
    /// Text and region limits.
    pub limits: DataLimits,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            rank: 0,
            world_size: 1,
            limits: DataLimits::default(),
        }
    }
}

/// A sample with its key and the cursor it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedSample {
    /// The pair's key.
    pub key: String,
    /// Where the stream was when it handed this sample out; resuming there yields it again.
    pub at: DataCursor,
    /// The sample.
    pub sample: PretrainSample,
}

/// The shard the stream is reading: which one, and its rows in permuted order.
struct LoadedShard {
    epoch: u64,
    shard_position: usize,
    pairs: Vec<JoinedPair>,
}

/// The endless, deterministic, rank-split sample stream described in the module docs.
pub struct SampleStream {
    shards: Vec<ShardPair>,
    tokenizer: WordPiece,
    options: StreamOptions,
    detector: DetectorInfo,
    cursor: DataCursor,
    order: Option<(u64, Vec<usize>)>,
    loaded: Option<LoadedShard>,
    counts: ShardCounts,
}

/// Domain tags so that the shard-order and row-order generators never share a seed.
const SHARD_ORDER_TAG: u64 = 0x5348_4152_445f_4f52; // "SHARD_OR"
const ROW_ORDER_TAG: u64 = 0x524f_575f_4f52_4452; // "ROW_ORDR"

/// SplitMix64 finaliser: a fixed, documented mix (unlike `std`'s hasher, it never changes).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from several numbers, stable across platforms and Rust versions.
pub(crate) fn derive_seed(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x1B87_3593_9E37_79B9, |h, &p| splitmix64(h ^ p))
}

impl SampleStream {
    /// A stream from the start (epoch 0). Checks the options and that every region shard was
    /// made by the same detector.
    pub fn new(
        shards: Vec<ShardPair>,
        tokenizer: WordPiece,
        options: StreamOptions,
    ) -> Result<Self> {
        Self::resume(DataCursor::default(), shards, tokenizer, options)
    }

    /// A stream that continues exactly at `cursor`, which must come from a stream over the same
    /// shards with the same tokenizer and options.
    pub fn resume(
        cursor: DataCursor,
        shards: Vec<ShardPair>,
        tokenizer: WordPiece,
        options: StreamOptions,
    ) -> Result<Self> {
        options.limits.check()?;
        ensure!(!shards.is_empty(), "no shards to stream");
        ensure!(options.world_size >= 1, "world_size must be at least 1");
        ensure!(
            options.rank < options.world_size,
            "rank {} is not below world_size {}",
            options.rank,
            options.world_size
        );
        ensure!(
            shards.len() >= options.world_size,
            "{} shards for {} ranks: every rank needs at least one shard per epoch; \
             write more, smaller shards or use fewer ranks",
            shards.len(),
            options.world_size
        );
        let detector = check_detectors(&shards)?;
        Ok(Self {
            shards,
            tokenizer,
            options,
            detector,
            cursor,
            order: None,
            loaded: None,
            counts: ShardCounts::default(),
        })
    }

    /// The position of the next sample.
    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// The options the stream was made with.
    pub fn options(&self) -> &StreamOptions {
        &self.options
    }

    /// The detector every region shard was made by.
    pub fn detector(&self) -> &DetectorInfo {
        &self.detector
    }

    /// Row counts summed over the shards this stream object has read (not kept across resume).
    pub fn counts(&self) -> ShardCounts {
        self.counts
    }

    /// The indices (into the shard list) of the shards this rank reads in `epoch`, in order.
    pub fn rank_shards(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(&[self.options.seed, epoch, SHARD_ORDER_TAG]));
        order.shuffle(&mut rng);
        order
            .into_iter()
            .skip(self.options.rank)
            .step_by(self.options.world_size)
            .collect()
    }

    /// The next sample. Never ends: after the last shard of an epoch comes the next epoch.
    pub fn next_sample(&mut self) -> Result<PretrainSample> {
        Ok(self.next_keyed()?.sample)
    }

    /// The next sample with its key and position.
    pub fn next_keyed(&mut self) -> Result<KeyedSample> {
        // Shards found empty since the last sample; when that is every shard, nothing will come.
        let mut empty: HashSet<usize> = HashSet::new();
        loop {
            let epoch = self.cursor.epoch;
            if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                self.order = Some((epoch, self.rank_shards(epoch)));
            }
            let shard_count = self.order.as_ref().map_or(0, |(_, o)| o.len());
            if self.cursor.shard_position >= shard_count {
                self.cursor = DataCursor {
                    epoch: epoch + 1,
                    shard_position: 0,
                    row: 0,
                };
                continue;
            }
            let position = self.cursor.shard_position;
            let shard_index = self.order.as_ref().map_or(0, |(_, o)| o[position]);
            let current = self
                .loaded
                .as_ref()
                .is_some_and(|l| l.epoch == epoch && l.shard_position == position);
            if !current {
                self.loaded = None;
                let pairs = self.load(epoch, shard_index)?;
                ensure!(
                    self.cursor.row <= pairs.len(),
                    "cursor row {} is past the {} samples of {}: the cursor comes from other \
                     data or options",
                    self.cursor.row,
                    pairs.len(),
                    self.shards[shard_index].pairs
                );
                self.loaded = Some(LoadedShard {
                    epoch,
                    shard_position: position,
                    pairs,
                });
            }
            let pairs = self.loaded.as_ref().map_or(&[][..], |l| &l.pairs[..]);
            if let Some(pair) = pairs.get(self.cursor.row) {
                let at = self.cursor;
                self.cursor.row += 1;
                return Ok(KeyedSample {
                    key: pair.key.clone(),
                    at,
                    sample: pair.to_sample(),
                });
            }
            if pairs.is_empty() {
                empty.insert(shard_index);
                ensure!(
                    empty.len() < self.shards.len(),
                    "none of the {} shards holds a usable sample (kept pair with text and \
                     regions), first shard {}",
                    self.shards.len(),
                    self.shards[0].pairs
                );
            }
            self.cursor.shard_position += 1;
            self.cursor.row = 0;
        }
    }

    /// Reads shard `shard_index` and permutes its rows for `epoch`.
    fn load(&mut self, epoch: u64, shard_index: usize) -> Result<Vec<JoinedPair>> {
        let shard = &self.shards[shard_index];
        let expected = (&self.detector, self.shards[0].regions.as_str());
        let read = read_shard(shard, &self.tokenizer, &self.options.limits, Some(expected))?;
        self.counts.add(&read.counts);
        let mut pairs = read.pairs;
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(&[
            self.options.seed,
            epoch,
            ROW_ORDER_TAG,
            shard_index as u64,
        ]));
        pairs.shuffle(&mut rng);
        Ok(pairs)
    }
}

/// Number of positions a sample takes in the model: text ids plus regions.
pub fn sample_tokens(sample: &PretrainSample) -> usize {
    sample.text_ids.len() + sample.regions()
}

/// Groups a [`SampleStream`] into dynamic batches bounded by sample count and by positions
/// (text ids + regions summed over the batch), as UNITER batches by tokens and regions: short
/// captions with few regions make larger batches.
pub struct Batcher {
    stream: SampleStream,
    held: Option<KeyedSample>,
}

impl Batcher {
    /// Batches from `stream`.
    pub fn new(stream: SampleStream) -> Self {
        Self { stream, held: None }
    }

    /// The next batch: samples in stream order until one more would exceed `max_samples` or
    /// `max_tokens`. A batch always holds at least one sample, even one larger than `max_tokens`.
    pub fn next_batch(
        &mut self,
        max_samples: usize,
        max_tokens: usize,
    ) -> Result<Vec<PretrainSample>> {
        Ok(self
            .next_keyed_batch(max_samples, max_tokens)?
            .into_iter()
            .map(|k| k.sample)
            .collect())
    }

    /// [`Batcher::next_batch`] with keys and positions.
    pub fn next_keyed_batch(
        &mut self,
        max_samples: usize,
        max_tokens: usize,
    ) -> Result<Vec<KeyedSample>> {
        ensure!(max_samples >= 1, "max_samples must be at least 1");
        let mut batch: Vec<KeyedSample> = Vec::new();
        let mut tokens = 0;
        while batch.len() < max_samples {
            let next = match self.held.take() {
                Some(held) => held,
                None => self.stream.next_keyed()?,
            };
            let size = sample_tokens(&next.sample);
            if !batch.is_empty() && tokens + size > max_tokens {
                self.held = Some(next);
                break;
            }
            tokens += size;
            batch.push(next);
        }
        Ok(batch)
    }

    /// The position of the next sample a batch will start with; resume a stream there and wrap
    /// it in a new batcher to continue exactly.
    pub fn cursor(&self) -> DataCursor {
        self.held
            .as_ref()
            .map_or_else(|| self.stream.cursor(), |held| held.at)
    }

    /// The wrapped stream.
    pub fn stream(&self) -> &SampleStream {
        &self.stream
    }
}

/// Batches read ahead on a worker thread: the next `depth` batches of a [`Batcher`] are read,
/// joined and tokenized (shard downloads included) while the device trains on the current one.
/// Its [`Prefetcher::cursor`] is the position after the last batch handed out, not after the
/// ones read ahead, so a checkpoint resumes exactly where training stood.
pub struct Prefetcher {
    batches: std::sync::mpsc::Receiver<Result<(Vec<PretrainSample>, DataCursor)>>,
    cursor: DataCursor,
}

impl Prefetcher {
    /// Starts reading batches of at most `max_samples` samples and `max_tokens` positions from
    /// `batcher`, keeping up to `depth` (at least 1) ready.
    pub fn spawn(
        mut batcher: Batcher,
        max_samples: usize,
        max_tokens: usize,
        depth: usize,
    ) -> Result<Self> {
        let cursor = batcher.cursor();
        let (sender, batches) = std::sync::mpsc::sync_channel(depth.max(1));
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || {
                loop {
                    let next = batcher
                        .next_batch(max_samples, max_tokens)
                        .map(|batch| (batch, batcher.cursor()));
                    let failed = next.is_err();
                    // A dropped receiver (the run ended) ends the thread.
                    if sender.send(next).is_err() || failed {
                        break;
                    }
                }
            })
            .context("starting the prefetch thread")?;
        Ok(Self { batches, cursor })
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<Vec<PretrainSample>> {
        let (batch, cursor) = self
            .batches
            .recv()
            .context("the prefetch thread stopped")??;
        self.cursor = cursor;
        Ok(batch)
    }

    /// The position of the next sample training will see.
    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }
}
