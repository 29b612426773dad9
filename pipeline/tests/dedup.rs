//! Image–text aggregation: duplicate images keep their best text, over-shared texts go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use pipeline::dedup::{
    DUPLICATE_IMAGE, DedupConfig, DedupPlan, DedupRow, SHARED_TEXT, normalized_text, plan,
};

/// SplitMix64: a small seeded generator, enough for test data and shuffles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn score(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// A mask of `count` distinct bits, all inside `window`.
    fn bits(&mut self, count: u32, window: u64) -> u64 {
        assert!(count <= window.count_ones());
        let mut mask = 0u64;
        while mask.count_ones() < count {
            let bit = 1u64 << self.below(64);
            if window & bit != 0 {
                mask |= bit;
            }
        }
        mask
    }
}

fn row(key: &str, sha256: &str, phash: Option<u64>, text: &str, score: f32) -> DedupRow {
    DedupRow {
        key: key.into(),
        sha256: sha256.into(),
        phash,
        text: text.into(),
        score,
    }
}

/// The plan as (key, reason, message, kept key), which must not depend on the input order.
fn by_key(rows: &[DedupRow], plan: &DedupPlan) -> Vec<(String, String, String, Option<String>)> {
    plan.dropped
        .iter()
        .map(|d| {
            (
                rows[d.index].key.clone(),
                d.reason.to_string(),
                d.message.clone(),
                d.kept.map(|k| rows[k].key.clone()),
            )
        })
        .collect()
}

/// Dropped keys by reason.
fn drops(rows: &[DedupRow], plan: &DedupPlan, reason: &str) -> BTreeSet<String> {
    plan.dropped
        .iter()
        .filter(|d| d.reason == reason)
        .map(|d| rows[d.index].key.clone())
        .collect()
}

/// For each row, the smallest row index of its image group as the plan reports it; only
/// meaningful when no row is dropped for its text.
fn plan_partition(rows: &[DedupRow], plan: &DedupPlan) -> Vec<usize> {
    let mut rep: Vec<usize> = (0..rows.len()).collect();
    for d in &plan.dropped {
        assert_eq!(d.reason, DUPLICATE_IMAGE);
        rep[d.index] = d.kept.expect("a duplicate names its kept row");
    }
    smallest_member(&rep)
}

/// Maps a row -> representative array to row -> smallest index with the same representative.
fn smallest_member(rep: &[usize]) -> Vec<usize> {
    let mut smallest: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, &r) in rep.iter().enumerate() {
        smallest.entry(r).or_insert(i);
    }
    rep.iter().map(|r| smallest[r]).collect()
}

fn config(max_hamming: u32, max_images_per_text: usize) -> DedupConfig {
    DedupConfig {
        max_hamming,
        max_images_per_text,
        near_duplicates: true,
    }
}

#[test]
fn config_defaults_and_unknown_fields() {
    let default: DedupConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(default, DedupConfig::default());
    assert_eq!(
        (
            default.max_hamming,
            default.max_images_per_text,
            default.near_duplicates
        ),
        (4, 10, true)
    );
    let partial: DedupConfig = serde_json::from_str(r#"{"max_hamming": 6}"#).unwrap();
    assert_eq!(partial.max_hamming, 6);
    assert_eq!(partial.max_images_per_text, 10);
    assert!(serde_json::from_str::<DedupConfig>(r#"{"max_hamming": 6, "hamming": 2}"#).is_err());
}

#[test]
fn exact_duplicates_keep_the_best_score() {
    let rows = vec![
        row("k1", "aa", None, "a red barn", 0.2),
        row("k2", "aa", None, "barn in snow", 0.9),
        row("k3", "aa", None, "farm", 0.5),
        row("k4", "bb", None, "another picture", 0.1),
    ];
    let plan = plan(&rows, &DedupConfig::default());
    assert_eq!(plan.image_groups, 2);
    assert_eq!(plan.dropped.len(), 2);
    for d in &plan.dropped {
        assert_eq!(d.reason, DUPLICATE_IMAGE);
        assert_eq!(d.kept, Some(1));
        assert!(d.message.contains("\"k2\""), "{}", d.message);
        assert!(d.message.contains("sha256"), "{}", d.message);
    }
    assert_eq!(
        drops(&rows, &plan, DUPLICATE_IMAGE),
        BTreeSet::from(["k1".into(), "k3".into()])
    );
}

#[test]
fn score_ties_go_to_the_smallest_key_and_nan_ranks_lowest() {
    let rows = vec![
        row("b", "aa", None, "one", 0.5),
        row("a", "aa", None, "two", 0.5),
        row("c", "aa", None, "three", f32::NAN),
        row("d", "cc", None, "four", f32::NAN),
        row("e", "cc", None, "five", -1.0),
        row("f", "dd", None, "six", 0.0),
        row("g", "dd", None, "seven", -0.0),
    ];
    let plan = plan(&rows, &DedupConfig::default());
    let kept: BTreeMap<String, String> = plan
        .dropped
        .iter()
        .map(|d| (rows[d.index].key.clone(), rows[d.kept.unwrap()].key.clone()))
        .collect();
    let expected: BTreeMap<String, String> = [("b", "a"), ("c", "a"), ("d", "e"), ("g", "f")]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
    assert_eq!(kept, expected);
}

#[test]
fn empty_sha256_matches_nothing() {
    let rows = vec![
        row("a", "", None, "one", 0.5),
        row("b", "", None, "two", 0.6),
        row("c", "", Some(7), "three", 0.6),
        row("d", "", Some(7), "four", 0.7),
    ];
    let plan = plan(&rows, &DedupConfig::default());
    assert_eq!(plan.image_groups, 3);
    assert_eq!(
        drops(&rows, &plan, DUPLICATE_IMAGE),
        BTreeSet::from(["c".into()])
    );
}

#[test]
fn near_duplicates_within_max_hamming_exactly() {
    let base = 0xDEAD_BEEF_0123_4567u64;
    for max_hamming in [0, 1, 4, 7] {
        let mut rng = Rng(u64::from(max_hamming));
        let at = base ^ rng.bits(max_hamming, !0);
        let beyond = base ^ rng.bits(max_hamming + 1, !0);
        let rows = vec![
            row("base", "s1", Some(base), "base", 0.9),
            row("at", "s2", Some(at), "at", 0.5),
            row("beyond", "s3", Some(beyond), "beyond", 0.5),
        ];
        let plan = plan(&rows, &config(max_hamming, 10));
        let dropped: Vec<_> = plan.dropped.iter().map(|d| (d.index, d.kept)).collect();
        assert_eq!(dropped, vec![(1, Some(0))], "max_hamming {max_hamming}");
        assert!(
            plan.dropped[0]
                .message
                .contains(&format!("distance {max_hamming})")),
            "{}",
            plan.dropped[0].message
        );

        // The same rows without near-duplicate search are three images.
        let exact_only = DedupConfig {
            near_duplicates: false,
            ..config(max_hamming, 10)
        };
        let plan = pipeline::dedup::plan(&rows, &exact_only);
        assert!(plan.dropped.is_empty());
        assert_eq!(plan.image_groups, 3);
    }
}

#[test]
fn chains_of_near_duplicates_are_one_group() {
    // a ~ b ~ c with 4 bits per step: a and c are 8 bits apart, still one image.
    let a = 0u64;
    let b = a ^ 0b1111;
    let c = b ^ 0b1111_0000;
    let rows = vec![
        row("a", "s1", Some(a), "first", 0.1),
        row("b", "s2", Some(b), "second", 0.2),
        row("c", "s3", Some(c), "third", 0.3),
        row("far", "s4", Some(c ^ 0b1_1111_0000_0000), "fourth", 0.4),
    ];
    let plan = plan(&rows, &DedupConfig::default());
    assert_eq!(plan.image_groups, 2);
    let got: Vec<_> = plan
        .dropped
        .iter()
        .map(|d| (rows[d.index].key.as_str(), d.kept, d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a",
                Some(2),
                "near-duplicate image of kept row \"c\" (perceptual-hash distance 8, linked \
                 through other rows of the group)"
            ),
            (
                "b",
                Some(2),
                "near-duplicate image of kept row \"c\" (perceptual-hash distance 4)"
            ),
        ]
    );
}

#[test]
fn identical_hashes_of_many_blank_images_are_one_group() {
    let mut rows: Vec<DedupRow> = (0..3000)
        .map(|i| {
            row(
                &format!("blank{i:04}"),
                &format!("sha{i}"),
                Some(0),
                &format!("t{i}"),
                0.5,
            )
        })
        .collect();
    rows.push(row("other", "x", Some(u64::MAX), "other", 0.1));
    let plan = plan(&rows, &DedupConfig::default());
    assert_eq!(plan.image_groups, 2);
    assert_eq!(plan.dropped.len(), 2999);
    assert!(plan.dropped.iter().all(|d| d.kept == Some(0)));
    assert_eq!(plan.hash_comparisons, 1);
}

#[test]
fn dense_clusters_match_a_brute_force_search() {
    // Clusters of hashes that agree outside a 22-bit window: their buckets exceed the direct
    // limit, so the search recurses; the answer must equal all-pairs union-find.
    let mut rng = Rng(42);
    let mut hashes = Vec::new();
    for _ in 0..20 {
        let center = rng.next();
        let window = rng.bits(22, !0);
        for _ in 0..500 {
            hashes.push(center ^ (rng.next() & window));
        }
    }
    for _ in 0..2000 {
        hashes.push(rng.next());
    }
    // A crowd of near-blank images: every hash of weight <= 2.
    hashes.push(0);
    for i in 0..64 {
        for j in i..64 {
            hashes.push((1u64 << i) | (1u64 << j));
        }
    }
    let rows: Vec<DedupRow> = hashes
        .iter()
        .enumerate()
        .map(|(i, &h)| {
            row(
                &format!("k{i:05}"),
                &format!("s{i}"),
                Some(h),
                &format!("t{i}"),
                0.5,
            )
        })
        .collect();

    for max_hamming in [3, 4] {
        let start = Instant::now();
        let plan = plan(&rows, &config(max_hamming, 10));
        println!(
            "dense clusters, max_hamming {max_hamming}: {} rows, {} groups, {} comparisons, {:?}",
            rows.len(),
            plan.image_groups,
            plan.hash_comparisons,
            start.elapsed()
        );

        let mut parent: Vec<usize> = (0..hashes.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                if (hashes[i] ^ hashes[j]).count_ones() <= max_hamming {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
        let brute: Vec<usize> = (0..hashes.len()).map(|i| find(&mut parent, i)).collect();
        let brute = smallest_member(&brute);
        let groups = brute.iter().collect::<BTreeSet<_>>().len();
        assert!(
            groups > 1000 && groups < hashes.len() - 1000,
            "{groups} groups: a weak test"
        );
        assert_eq!(plan.image_groups, groups);
        assert_eq!(plan_partition(&rows, &plan), brute);
    }
}

#[test]
fn normalised_texts() {
    assert_eq!(
        normalized_text("  Click\tto \n ENLARGE  "),
        "click to enlarge"
    );
    assert_eq!(
        normalized_text("ΟΔΟΣ\u{a0}Straße"),
        normalized_text("οδος straße")
    );
    assert_eq!(normalized_text(""), "");
}

#[test]
fn a_text_on_more_than_the_limit_of_images_drops_all_its_rows() {
    let texts = [
        "Click to enlarge",
        "click  to enlarge",
        "CLICK TO ENLARGE ",
        "click to\tenlarge",
    ];
    let over: Vec<DedupRow> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| row(&format!("k{i}"), &format!("s{i}"), None, t, 0.9))
        .collect();
    let plan = plan(&over, &config(4, 3));
    assert_eq!(plan.shared_texts, 1);
    assert_eq!(plan.dropped.len(), 4);
    for d in &plan.dropped {
        assert_eq!(d.reason, SHARED_TEXT);
        assert_eq!(d.kept, None);
        assert_eq!(
            d.message,
            "text shared by 4 distinct images, over max_images_per_text = 3"
        );
    }

    // At the limit: kept.
    let plan = pipeline::dedup::plan(&over[..3], &config(4, 3));
    assert!(plan.dropped.is_empty());
    assert_eq!(plan.shared_texts, 0);

    // Five rows but three distinct images (two exact and one near duplicate): at the limit,
    // so only the duplicate images go.
    let mut rows = over[..3].to_vec();
    rows[0].phash = Some(0);
    rows.push(row("k3", "s0", None, "click to enlarge", 0.1));
    rows.push(row("k4", "s9", Some(1), "click to enlarge", 0.2));
    let plan = pipeline::dedup::plan(&rows, &config(4, 3));
    assert_eq!(plan.shared_texts, 0);
    assert_eq!(drops(&rows, &plan, SHARED_TEXT), BTreeSet::new());
    assert_eq!(
        drops(&rows, &plan, DUPLICATE_IMAGE),
        BTreeSet::from(["k3".into(), "k4".into()])
    );
}

/// A hand-computed case with both rules, `max_images_per_text = 2`:
///
/// - "click to enlarge" is on images A, B, C (3 > 2): a1, b1, c1 go as `shared_text`.
/// - Image A (a1, a2, a3 near duplicates): a1 is gone, a2 (0.7) beats a3 (0.5).
/// - Image B: b1 (0.95) would have won; it is gone, so b2 (0.4) stays. Were images
///   deduplicated first, B would have lost its only real caption.
/// - Image C has only c1: the image is dropped entirely.
/// - "sunset over the sea" is on 4 rows but 2 images (D: d1, d2, d3 exact; E: e1): not shared.
///   D keeps d2 (0.8); d1 ties d3 at 0.6 but both lose.
#[test]
fn both_rules_on_a_hand_computed_case() {
    let a = 0xF0F0_F0F0_0000_0000u64;
    let rows = vec![
        row("a1", "sa1", Some(a), "Click to enlarge", 0.9),
        row("a2", "sa2", Some(a ^ 0b11), "A red barn in snow", 0.7),
        row("a3", "sa3", Some(a ^ 0b1100), "a  RED barn in snow", 0.5),
        row(
            "b1",
            "sb",
            Some(0x1234_5678_9ABC_DEF0),
            "CLICK  to enlarge",
            0.95,
        ),
        row("b2", "sb", None, "Dog on a beach", 0.4),
        row(
            "c1",
            "sc",
            Some(0x0F0F_0F0F_0F0F_0F0F),
            "click to enlarge\n",
            0.99,
        ),
        row("d1", "sd", None, "Sunset over the sea", 0.6),
        row("d2", "sd", None, "sunset over the sea", 0.8),
        row("d3", "sd", None, "SUNSET over the sea", 0.6),
        row("e1", "se", None, "sunset over  the sea", 0.3),
    ];
    let plan = plan(&rows, &config(4, 2));
    assert_eq!(plan.image_groups, 5);
    assert_eq!(plan.shared_texts, 1);
    let got: Vec<_> = plan
        .dropped
        .iter()
        .map(|d| {
            (
                rows[d.index].key.as_str(),
                d.reason,
                d.kept.map(|k| rows[k].key.as_str()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a1", SHARED_TEXT, None),
            ("a3", DUPLICATE_IMAGE, Some("a2")),
            ("b1", SHARED_TEXT, None),
            ("c1", SHARED_TEXT, None),
            ("d1", DUPLICATE_IMAGE, Some("d2")),
            ("d3", DUPLICATE_IMAGE, Some("d2")),
        ]
    );
    assert_eq!(
        plan.dropped[1].message,
        "near-duplicate image of kept row \"a2\" (perceptual-hash distance 4)"
    );
}

#[test]
fn the_plan_does_not_depend_on_the_row_order() {
    // Few images and texts, so that every rule fires often, with score ties: rows are copies
    // of 80 pictures (same sha256, or a perceptual hash a few bits off), texts come from a
    // skewed pool of 400 captions (a few on many images, most on few).
    let mut rng = Rng(7);
    let centers: Vec<u64> = (0..80).map(|_| rng.next()).collect();
    let mut rows: Vec<DedupRow> = (0..600)
        .map(|i| {
            let c = rng.below(centers.len());
            let (sha256, phash) = match rng.below(10) {
                0..3 => (format!("sha{c}"), Some(centers[c])),
                3 => (format!("sha{c}-{i}"), None),
                _ => {
                    let distance = rng.below(6) as u32;
                    (
                        format!("sha{c}-{i}"),
                        Some(centers[c] ^ rng.bits(distance, !0)),
                    )
                }
            };
            let pool = rng.below(400) + 1;
            let caption = rng.below(pool);
            let text = match rng.below(3) {
                0 => format!("  CAPTION   {caption} "),
                _ => format!("caption {caption}"),
            };
            let score = rng.below(5) as f32 / 4.0;
            row(&format!("key{i:03}"), &sha256, phash, &text, score)
        })
        .collect();
    let config = config(4, 6);
    let reference = plan(&rows, &config);
    println!(
        "{} groups, {} shared texts, {} shared-text rows, {} duplicate rows",
        reference.image_groups,
        reference.shared_texts,
        drops(&rows, &reference, SHARED_TEXT).len(),
        drops(&rows, &reference, DUPLICATE_IMAGE).len()
    );
    assert!(reference.shared_texts > 0);
    assert!(drops(&rows, &reference, DUPLICATE_IMAGE).len() > 50);
    let expected = by_key(&rows, &reference);
    for _ in 0..20 {
        rng.shuffle(&mut rows);
        let shuffled = plan(&rows, &config);
        assert_eq!(by_key(&rows, &shuffled), expected);
        assert_eq!(shuffled.image_groups, reference.image_groups);
        assert_eq!(shuffled.shared_texts, reference.shared_texts);
        assert_eq!(shuffled.hash_comparisons, reference.hash_comparisons);
    }
}

#[test]
fn planted_near_duplicates_among_200k_random_hashes_are_found_exactly() {
    let mut rng = Rng(2024);
    let config = DedupConfig::default();
    let base = 200_000;
    let mut rows: Vec<DedupRow> = (0..base)
        .map(|i| {
            row(
                &format!("r{i:06}"),
                &format!("sha{i}"),
                Some(rng.next()),
                &format!("t{i}"),
                rng.score(),
            )
        })
        .collect();
    // 1000 copies within max_hamming of a distinct original (distance 0..=4, ~200 each) and
    // 500 copies just beyond it (5..=8 bits), which must stay apart.
    let mut originals: Vec<usize> = (0..base).collect();
    rng.shuffle(&mut originals);
    let mut planted = BTreeSet::new();
    for (n, &original) in originals[..1500].iter().enumerate() {
        let distance = if n < 1000 {
            (n % 5) as u32
        } else {
            5 + (n % 4) as u32
        };
        let phash = rows[original].phash.map(|h| h ^ rng.bits(distance, !0));
        let copy = rows.len();
        rows.push(row(
            &format!("p{n:04}"),
            &format!("copy{n}"),
            phash,
            &format!("c{n}"),
            rng.score(),
        ));
        if n < 1000 {
            planted.insert((original.min(copy), original.max(copy)));
        }
    }

    let start = Instant::now();
    let plan = plan(&rows, &config);
    let elapsed = start.elapsed();
    println!(
        "{} rows: {} groups, {} hash comparisons, planned in {elapsed:?}",
        rows.len(),
        plan.image_groups,
        plan.hash_comparisons
    );

    assert_eq!(plan.image_groups, rows.len() - planted.len());
    let found: BTreeSet<(usize, usize)> = plan
        .dropped
        .iter()
        .map(|d| {
            assert_eq!(d.reason, DUPLICATE_IMAGE);
            let kept = d.kept.unwrap();
            (d.index.min(kept), d.index.max(kept))
        })
        .collect();
    assert_eq!(found, planted);
    // Far fewer comparisons than all pairs (2e10).
    assert!(plan.hash_comparisons < 50_000_000);
}
