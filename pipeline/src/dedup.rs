//! Image–text aggregation, the last LAIT step: "one image on many pages -> keep its best-scored
//! text; one text on too many images -> drop all those pairs".
//!
//! [`plan`] reads the rows still kept (one [`DedupRow`] each) and says which of them to drop, with
//! a reason code and a message; it touches no shard. The caller marks those rows `dropped` with
//! `drop_reason` = [`DroppedRow::reason`] and `error_message` = [`DroppedRow::message`]. Settings
//! come from [`DedupConfig`].
//!
//! # Image groups
//!
//! Two rows show the same image when their `sha256` are equal (exact duplicates; an empty
//! `sha256` matches nothing) or, with [`DedupConfig::near_duplicates`], when both have a
//! perceptual hash and the two hashes differ in at most [`DedupConfig::max_hamming`] bits (near
//! duplicates). An *image group* is a connected component of that relation, built with
//! union-find over every input row.
//!
//! **Transitivity is intended.** A chain `A ~ B ~ C` is one group even when `A` and `C` are
//! further apart than `max_hamming`. Components are the only grouping that does not depend on
//! the order rows are visited in (a greedy "pick a centre, take what lies within the radius"
//! clustering does), and a chain of small perceptual-hash steps is in practice the same picture
//! re-encoded, resized or lightly cropped on different sites. The cost is that two distinct but
//! very similar pictures linked by intermediate versions count as one image and keep one
//! text between them: a few pairs lost, never a duplicate kept. The message of a row dropped
//! that way gives the real distance to the kept row and says the link is indirect.
//!
//! # The two rules, in this order
//!
//! 1. **Shared text** ([`SHARED_TEXT`]). Texts are compared after Unicode lower-casing and
//!    whitespace collapsing (see [`normalized_text`]). A text carried by rows of more than
//!    [`DedupConfig::max_images_per_text`] *distinct image groups* drops every row carrying it.
//!    Rows of one group count once, so the same caption on one image re-posted on many pages
//!    is not "shared".
//! 2. **Duplicate image** ([`DUPLICATE_IMAGE`]). Among the rows of a group that rule 1 left,
//!    the one with the highest `score` stays (NaN counts as lowest, `-0.0` equals `0.0`); ties
//!    go to the smallest `key` (then the other fields, see [`plan`]). The other rows are dropped
//!    with a message naming the kept row's key.
//!
//! Rule 1 goes first, and counts over *all* rows, because boilerplate ("click to enlarge", a
//! site name) is exactly the text that tends to win an image group: it is attached to every
//! image of a site, often with a high relevance score. Deduplicating images first would (a) let
//! the boilerplate row win, drop the image's real caption as a duplicate, and then lose the
//! whole image when rule 1 removes the boilerplate; and (b) hide how generic the text is, since
//! it would only be counted on the groups it won. Text first removes the boilerplate
//! everywhere, after which each image keeps its best remaining caption; a group whose rows all
//! carry over-shared texts is dropped entirely (it has no usable text).
//!
//! # Near-duplicate search
//!
//! Multi-index hashing, exact (every pair within `max_hamming` is found; there is no cap that
//! loses pairs). With `d = max_hamming`, the 64 bits are split into `d + 1` bands; two hashes at
//! distance `<= d` differ in at most `d` bands, so by pigeonhole they agree on at least one.
//! For each band the distinct hashes are sorted by that band's bits and only hashes in the same
//! bucket (same band, same value) are compared. Identical hashes (e.g. the all-zero hash of
//! every blank image) are joined first and searched once, so they never make a bucket large.
//!
//! Buckets of more than [`MAX_DIRECT_BUCKET`] distinct hashes (a crowd of near-blank images,
//! or plain size: about `n / 2^13` per bucket with 13-bit bands) are not compared all-pairs;
//! they are searched again the same way on the bits the bucket does not already fix (its
//! members agree on the band, so their distance lies in the other bits and pigeonhole applies
//! again). Bits equal across a whole bucket are dropped from the split, a bucket left with at
//! most `d` free bits is one group without any comparison, and a bucket whose hashes are
//! already all in one group is skipped. So the search stays exact and its cost stays close to
//! `(d + 1)` sorts per recursion level instead of growing with the square of a bucket.
//!
//! # Determinism
//!
//! Rows are first put in a canonical order (`key`, then `sha256`, `phash`, `text`, `score`),
//! and all choices are made in that order, so the same rows in any order give the same drops
//! with the same messages, listed in the same (canonical) order; only [`DroppedRow::index`]
//! follows the input. Rows equal in every field are interchangeable.
//!
//! # Memory and time
//!
//! Besides the rows it is given, [`plan`] holds about 28 bytes per row at its peak: 4-byte
//! canonical order, union-find parent and per-row state, and 16-byte (prefix or hash, row)
//! entries sorted for the canonical-order, `sha256`, perceptual-hash and text passes one after
//! another. Texts are hashed through one reused buffer; only a text on more than
//! `max_images_per_text` rows is normalised again, row by row, to compare it exactly (about 40
//! bytes a row, for that text only). Each dropped row adds about 140 bytes (its [`DroppedRow`]
//! and message). Rows are not copied. Work is single-threaded: `O(n log n)` sorts plus the
//! bucket comparisons.
//!
//! A [`DedupRow`] is 96 bytes plus its three strings on the heap (64-byte hex `sha256`, key,
//! caption): about 300 bytes a row as the caller holds them, which dominates. Measured
//! (release, one core of a shared 2-core machine, ~3% duplicates): 200k rows in 0.1 s, 1M in
//! 1.4 s, 10M in 22 s with 3.0 GB of rows and 0.29 GB more at the plan's peak; 30M rows with
//! random hashes in 43 s (1.4e9 hash comparisons, and the 16 pairs within 4 bits that chance
//! predicts). A cross-shard run at 100M rows therefore needs about 30 GB for the rows, ~3 GB
//! for the plan and ~1.5 GB per 10M dropped rows, i.e. a 48 GB machine, and should take about
//! 5 minutes (extrapolated; hash comparisons grow as `n^2 / 2^23`, ~1.5e10 at 100M). No key
//! splits near duplicates across processes, so beyond that the rows must get leaner (binary
//! `sha256`, a 128-bit text hash in place of the text) rather than sharded. Row indices are
//! 32-bit: one call takes fewer than `u32::MAX` rows.

use std::cmp::Ordering;
use std::hash::{DefaultHasher, Hasher};

use serde::Deserialize;

/// Reason code of a row whose image is kept with another row's text.
pub const DUPLICATE_IMAGE: &str = "duplicate_image";

/// Reason code of a row whose text is shared by too many distinct images.
pub const SHARED_TEXT: &str = "shared_text";

/// Largest bucket of distinct perceptual hashes compared all-pairs; larger buckets are searched
/// again on their remaining bits (see the module documentation). At this size the pairwise
/// comparisons (~33k) cost about as much as re-sorting the bucket `max_hamming + 1` times
/// (measured: limits from 32 to 256 give the same speed at 1M rows).
pub const MAX_DIRECT_BUCKET: usize = 256;

/// Settings of the aggregation step. TOML table `[dedup]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// Largest Hamming distance between two 64-bit perceptual hashes of the same image.
    /// Default 4: re-encodes and resizes of a photo stay within a few bits of a DCT hash,
    /// while unrelated photos sit around 32 bits apart. The search stays exact for any value,
    /// but it slows as the value grows (bands of `64 / (max_hamming + 1)` bits).
    pub max_hamming: u32,
    /// Most distinct images (image groups) one text may describe; a text on more loses all its
    /// rows. Default 10: above the size of an ordinary gallery that repeats one real caption
    /// (product views, photo sets, crops that change the perceptual hash), so genuine captions
    /// survive, yet far below the hundreds to thousands of images that carry boilerplate such
    /// as "click to enlarge" or a site name. Boilerplate counts are heavy-tailed, so any value
    /// from about 5 to 20 removes nearly the same rows; the paper gives no number.
    pub max_images_per_text: usize,
    /// Also join images whose perceptual hashes are within `max_hamming` bits. Default `true`;
    /// with `false` only equal `sha256` make duplicates.
    pub near_duplicates: bool,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            max_hamming: 4,
            max_images_per_text: 10,
            near_duplicates: true,
        }
    }
}

/// One kept image–text pair, as the aggregation step sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupRow {
    /// The row's unique key; names the kept row in messages and breaks score ties.
    pub key: String,
    /// Lower-case hex SHA-256 of the image bytes; empty when unknown (then never an exact match).
    pub sha256: String,
    /// 64-bit perceptual hash of the image; `None` when unknown (then never a near match).
    pub phash: Option<u64>,
    /// The pair's text (caption).
    pub text: String,
    /// Image–text relevance score; higher is better.
    pub score: f32,
}

/// One row [`plan`] drops.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedRow {
    /// Index of the row in the slice given to [`plan`].
    pub index: usize,
    /// Reason code: [`DUPLICATE_IMAGE`] or [`SHARED_TEXT`].
    pub reason: &'static str,
    /// Human-readable detail, for the `error_message` column.
    pub message: String,
    /// For [`DUPLICATE_IMAGE`], the index of the row kept for the image; `None` otherwise.
    pub kept: Option<usize>,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DedupPlan {
    /// The rows to drop, in canonical order (by key; see the module documentation). Rows not
    /// listed stay kept.
    pub dropped: Vec<DroppedRow>,
    /// Number of image groups among the input rows (distinct images, duplicates joined).
    pub image_groups: usize,
    /// Number of distinct (normalised) texts dropped as [`SHARED_TEXT`].
    pub shared_texts: usize,
    /// Perceptual-hash pairs compared during the near-duplicate search (a measure of its cost).
    pub hash_comparisons: u64,
}

/// The form texts are compared in for the shared-text rule: Unicode lower case (character by
/// character, with final sigma `ς` folded to `σ` so that lower-casing needs no context), runs of
/// Unicode whitespace collapsed to one space, no leading or trailing whitespace.
pub fn normalized_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    write_normalized(text, &mut out);
    out
}

/// Plans the aggregation of `rows` (the rows still kept) under `config`: which rows to drop,
/// why, and, for duplicates, which row was kept instead. See the module documentation for the
/// rules, their order, and the cost.
///
/// The result depends only on the multiset of rows, not on their order: choices follow the
/// canonical order (`key`, `sha256`, `phash`, `text`, `score`), and
/// [`DedupPlan::dropped`] is listed in it.
///
/// # Panics
///
/// If `rows` holds `u32::MAX` rows or more (row indices are 32-bit to halve the plan's memory).
pub fn plan(rows: &[DedupRow], config: &DedupConfig) -> DedupPlan {
    assert!(
        rows.len() < u32::MAX as usize,
        "dedup::plan takes fewer than u32::MAX rows"
    );
    let n = rows.len() as u32;

    // Canonical order: from here on a row is named by its rank in it. Sorting (prefix, index)
    // pairs settles most comparisons without touching the rows' strings.
    let mut keyed: Vec<(u64, u32)> = (0..n).map(|i| (prefix(&rows[i as usize].key), i)).collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| canonical_cmp(&rows[a.1 as usize], &rows[b.1 as usize]))
    });
    let order: Vec<u32> = keyed.iter().map(|&(_, i)| i).collect();
    drop(keyed);
    let row = |rank: u32| &rows[order[rank as usize] as usize];

    let mut groups = UnionFind::new(n);

    // Exact duplicates: equal, non-empty sha256.
    let mut by_sha: Vec<(u64, u32)> = (0..n)
        .filter(|&r| !row(r).sha256.is_empty())
        .map(|r| (prefix(&row(r).sha256), r))
        .collect();
    by_sha.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| row(a.1).sha256.cmp(&row(b.1).sha256))
    });
    for pair in by_sha.windows(2) {
        if let &[(pa, a), (pb, b)] = pair
            && pa == pb
            && row(a).sha256 == row(b).sha256
        {
            groups.union(a, b);
        }
    }
    drop(by_sha);

    // Near duplicates: join equal hashes, then search the distinct ones.
    let mut hash_comparisons = 0;
    if config.near_duplicates {
        let mut hashes: Vec<(u64, u32)> = (0..n)
            .filter_map(|r| row(r).phash.map(|h| (h, r)))
            .collect();
        hashes.sort_unstable();
        for run in hashes.chunk_by(|a, b| a.0 == b.0) {
            if let [(_, first), rest @ ..] = run {
                for &(_, other) in rest {
                    groups.union(*first, other);
                }
            }
        }
        hashes.dedup_by_key(|e| e.0);
        let mut search = NearSearch {
            max_distance: config.max_hamming,
            groups: &mut groups,
            comparisons: 0,
        };
        search.run(&mut hashes, u64::MAX);
        hash_comparisons = search.comparisons;
    }

    let root = groups.into_roots();
    let image_groups = root
        .iter()
        .enumerate()
        .filter(|&(r, &g)| r as u32 == g)
        .count();

    // Rule 1, shared text: group rows by normalised text (hash, then exact comparison), count
    // the distinct image groups of each text.
    let limit = config.max_images_per_text;
    // Per row, 0 or the number of distinct images of its over-shared text.
    let mut shared = vec![0u32; n as usize];
    let mut shared_texts = 0;
    {
        let mut buffer = String::new();
        let mut texts: Vec<(u64, u32)> = (0..n)
            .map(|r| (text_hash(&row(r).text, &mut buffer), r))
            .collect();
        texts.sort_unstable();
        for run in texts.chunk_by(|a, b| a.0 == b.0) {
            if run.len() <= limit {
                continue;
            }
            // Nearly always one text; different texts with one hash are sorted apart here.
            let mut by_text: Vec<(String, u32)> = run
                .iter()
                .map(|&(_, r)| (normalized_text(&row(r).text), r))
                .collect();
            by_text.sort_unstable();
            for class in by_text.chunk_by(|a, b| a.0 == b.0) {
                if class.len() <= limit {
                    continue;
                }
                let mut images: Vec<u32> = class.iter().map(|&(_, r)| root[r as usize]).collect();
                images.sort_unstable();
                images.dedup();
                if images.len() > limit {
                    shared_texts += 1;
                    for &(_, r) in class {
                        shared[r as usize] = images.len() as u32;
                    }
                }
            }
        }
    }

    // Rule 2, duplicate image: the best row of each group among those rule 1 left.
    const NONE: u32 = u32::MAX;
    let mut best = vec![NONE; n as usize];
    for r in 0..n {
        if shared[r as usize] == 0 {
            let g = root[r as usize] as usize;
            if best[g] == NONE || better(row(r), row(best[g])) {
                best[g] = r;
            }
        }
    }

    let mut dropped = Vec::new();
    for r in 0..n {
        let index = order[r as usize] as usize;
        let images = shared[r as usize];
        if images > 0 {
            dropped.push(DroppedRow {
                index,
                reason: SHARED_TEXT,
                message: format!(
                    "text shared by {images} distinct images, over max_images_per_text = {limit}"
                ),
                kept: None,
            });
            continue;
        }
        let kept = best[root[r as usize] as usize];
        if kept != r {
            dropped.push(DroppedRow {
                index,
                reason: DUPLICATE_IMAGE,
                message: duplicate_message(row(r), row(kept), config.max_hamming),
                kept: Some(order[kept as usize] as usize),
            });
        }
    }

    DedupPlan {
        dropped,
        image_groups,
        shared_texts,
        hash_comparisons,
    }
}

/// The canonical order rows are considered in.
fn canonical_cmp(a: &DedupRow, b: &DedupRow) -> Ordering {
    a.key
        .cmp(&b.key)
        .then_with(|| a.sha256.cmp(&b.sha256))
        .then_with(|| a.phash.cmp(&b.phash))
        .then_with(|| a.text.cmp(&b.text))
        .then_with(|| a.score.total_cmp(&b.score))
}

/// Whether `a` beats `b`, a row before it in canonical order, for its image's text: only a
/// strictly higher score does, so ties stay with the earlier row.
fn better(a: &DedupRow, b: &DedupRow) -> bool {
    // NaN ranks lowest; `>` already treats -0.0 and 0.0 as equal.
    let score = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    score(a.score) > score(b.score)
}

/// The message of a row dropped for `kept`'s sake.
fn duplicate_message(row: &DedupRow, kept: &DedupRow, max_hamming: u32) -> String {
    let key = &kept.key;
    if !row.sha256.is_empty() && row.sha256 == kept.sha256 {
        return format!("same image (equal sha256) as kept row {key:?}");
    }
    match (row.phash, kept.phash) {
        (Some(a), Some(b)) if (a ^ b).count_ones() <= max_hamming => format!(
            "near-duplicate image of kept row {key:?} (perceptual-hash distance {})",
            (a ^ b).count_ones()
        ),
        (Some(a), Some(b)) => format!(
            "near-duplicate image of kept row {key:?} (perceptual-hash distance {}, linked \
             through other rows of the group)",
            (a ^ b).count_ones()
        ),
        _ => {
            format!("duplicate image of kept row {key:?} (linked through other rows of the group)")
        }
    }
}

/// Appends the normalised form of `text` (see [`normalized_text`]) to `out`.
fn write_normalized(text: &str, out: &mut String) {
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.is_ascii() {
            let start = out.len();
            out.push_str(word);
            out[start..].make_ascii_lowercase();
        } else {
            let lower = word.chars().flat_map(char::to_lowercase);
            out.extend(lower.map(|c| if c == 'ς' { 'σ' } else { c }));
        }
    }
}

/// The first 8 bytes of `s` as a big-endian number, zero-padded: ordering by it, then by the
/// whole string, is ordering by the string.
fn prefix(s: &str) -> u64 {
    let mut bytes = [0; 8];
    for (to, from) in bytes.iter_mut().zip(s.bytes()) {
        *to = from;
    }
    u64::from_be_bytes(bytes)
}

/// A 64-bit hash of the normalised text (collisions are resolved by comparing texts).
fn text_hash(text: &str, buffer: &mut String) -> u64 {
    buffer.clear();
    write_normalized(text, buffer);
    let mut hasher = DefaultHasher::new();
    hasher.write(buffer.as_bytes());
    hasher.finish()
}

/// Union-find over row ranks; the smaller rank becomes the root (path halving, no ranks).
struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    fn new(n: u32) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        loop {
            let parent = self.parent[x as usize];
            if parent == x {
                return x;
            }
            let grandparent = self.parent[parent as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
    }

    fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            let (root, child) = if a < b { (a, b) } else { (b, a) };
            self.parent[child as usize] = root;
        }
    }

    /// Each element's root, reusing the parent array.
    fn into_roots(mut self) -> Vec<u32> {
        for x in 0..self.parent.len() as u32 {
            let root = self.find(x);
            self.parent[x as usize] = root;
        }
        self.parent
    }
}

/// Exact search for pairs of perceptual hashes within `max_distance` bits (multi-index hashing,
/// recursive on large buckets; see the module documentation).
struct NearSearch<'a> {
    max_distance: u32,
    groups: &'a mut UnionFind,
    comparisons: u64,
}

impl NearSearch<'_> {
    /// Joins every pair of `entries` (distinct hashes, each with a row) within the distance.
    /// All entries agree on the bits outside `free`.
    fn run(&mut self, entries: &mut [(u64, u32)], free: u64) {
        let Some(&(first_hash, first_row)) = entries.first() else {
            return;
        };
        let first_group = self.groups.find(first_row);
        if entries[1..]
            .iter()
            .all(|&(_, r)| self.groups.find(r) == first_group)
        {
            return; // empty, one entry, or already one group
        }
        // Bits on which every entry agrees add nothing to any distance.
        let varying = entries
            .iter()
            .fold(0, |acc, &(h, _)| acc | (h ^ first_hash));
        let free = free & varying;
        let d = self.max_distance;
        if free.count_ones() <= d {
            // Any two entries differ only in the free bits, so in at most d of them.
            for &(_, r) in &entries[1..] {
                self.groups.union(first_row, r);
            }
            return;
        }
        if entries.len() <= MAX_DIRECT_BUCKET {
            for (i, &(a, ra)) in entries.iter().enumerate() {
                for &(b, rb) in &entries[i + 1..] {
                    if (a ^ b).count_ones() <= d {
                        self.groups.union(ra, rb);
                    }
                }
            }
            let len = entries.len() as u64;
            self.comparisons += len * (len - 1) / 2;
            return;
        }
        for band in bands(free, d + 1) {
            entries.sort_unstable_by_key(|&(h, _)| h & band);
            for bucket in entries.chunk_by_mut(|a, b| a.0 & band == b.0 & band) {
                if bucket.len() > 1 {
                    self.run(bucket, free & !band);
                }
            }
        }
    }
}

/// Splits the set bits of `free` into `count` masks of consecutive set bits, sizes differing by
/// at most one. Needs `count <= free.count_ones()`.
fn bands(free: u64, count: u32) -> Vec<u64> {
    let bits = free.count_ones();
    let (size, extra) = (bits / count, bits % count);
    let mut remaining = free;
    (0..count)
        .map(|i| {
            let mut band = 0;
            for _ in 0..size + u32::from(i < extra) {
                let lowest = remaining & remaining.wrapping_neg();
                band |= lowest;
                remaining &= !lowest;
            }
            band
        })
        .collect()
}
