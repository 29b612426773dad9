//! Scoring hooks for `pipeline ingest`: the LAIT "drop porn/racy and non-natural images" and
//! "weak-supervised relevance model" steps.
//!
//! A [`Scorer`] gives each (image, caption) pair two numbers in 0..=1 ([`Scores`]);
//! [`ScoringConfig::verdict`] turns them into a drop code or a keep. The ingest stage holds one
//! `Box<dyn Scorer>` and never knows which one it is.
//!
//! No learned weights are available yet (no NSFW, CLIP-like or ImageBERT relevance model can be
//! fetched here), so the default [`HeuristicScorer`] is a documented placeholder:
//!
//! - `nsfw` is only a **non-natural image** score from pixel statistics (logos, clip-art,
//!   screenshots, text, blank images score high; photos low). It knows nothing about nudity: it
//!   never flags a racy photo.
//! - `relevance` only judges whether the caption **could describe something** (content words
//!   against numbers, codes, file names and boilerplate). It never looks at the image, so it
//!   cannot tell a right caption from a wrong one.
//!
//! A learned scorer plugs in by implementing [`Scorer`]: e.g. an NSFW classifier for `nsfw`
//! (max with the heuristic's non-natural score), the detector's labels matched against caption
//! words, or a dual-encoder image–text similarity for `relevance`; or a trained ImageBERT's ITM
//! head, as the paper's weak-supervised relevance model. Scores written by different scorers are
//! not comparable; the pair shard keeps the scores, the stats should record [`Scorer::name`].

use std::collections::HashSet;

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// What a [`Scorer`] says about one image–text pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Probability that the image is not safe for work or not a natural photo, 0..=1 (the pair
    /// shard's `nsfw_score`).
    pub nsfw: f32,
    /// Image–text relevance, 0..=1 (the pair shard's `relevance_score`).
    pub relevance: f32,
}

/// Scores image–text pairs. Implementations must be cheap to share between worker threads.
pub trait Scorer: Send + Sync {
    /// Stable name and version of the scoring rule (e.g. `heuristic-v1`), for the shard stats.
    fn name(&self) -> &str;

    /// Scores `image` (the stored pixels, at most `max_side` on a side; see
    /// [`crate::imaging::ProcessedImage::rgb`]) with its cleaned `caption`.
    fn score(&self, image: &RgbImage, caption: &str) -> Scores;
}

/// Score thresholds (`[scoring]` in the ingest configuration). The paper gives none; these are
/// the defaults for the [`HeuristicScorer`] and need re-tuning for a learned scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Pairs whose `nsfw` score is above this are dropped (`nsfw_or_non_natural`). Default 0.5.
    pub max_nsfw: f32,
    /// Pairs whose `relevance` score is below this are dropped (`low_relevance`). Default 0.5:
    /// at least half of the caption's non-function words are content words.
    pub min_relevance: f32,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            max_nsfw: 0.5,
            min_relevance: 0.5,
        }
    }
}

impl ScoringConfig {
    /// The drop code for `scores`, or `None` to keep the pair: `nsfw_or_non_natural` when `nsfw`
    /// is above [`Self::max_nsfw`], else `low_relevance` when `relevance` is below
    /// [`Self::min_relevance`]. A NaN score drops the pair.
    pub fn verdict(&self, scores: &Scores) -> Option<&'static str> {
        if scores.nsfw.is_nan() || scores.nsfw > self.max_nsfw {
            Some("nsfw_or_non_natural")
        } else if scores.relevance.is_nan() || scores.relevance < self.min_relevance {
            Some("low_relevance")
        } else {
            None
        }
    }
}

/// Pixel statistics behind the [`HeuristicScorer`]'s non-natural score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageStats {
    /// Fraction of horizontally or vertically adjacent pixel pairs with exactly the same RGB.
    /// Camera noise keeps this low in photos (at most 0.27 on `assets/photos`); flat fills
    /// make it high in drawn images (0.6 and above, even after JPEG compression, since JPEG
    /// reproduces flat 8x8 blocks exactly).
    pub flat_ratio: f32,
    /// Fraction of pixels whose colour, quantised to 16 levels a channel, falls in the 8 most
    /// common of the 4096 bins. High for few-colour images, but also for grayscale and dark
    /// photos (up to 0.90 on `assets/photos`), so it only counts together with `flat_ratio`.
    pub palette_share: f32,
}

impl ImageStats {
    /// Measures `image`. An empty image counts as entirely flat and single-coloured.
    pub fn of(image: &RgbImage) -> Self {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            return Self {
                flat_ratio: 1.0,
                palette_share: 1.0,
            };
        }
        let raw = image.as_raw();
        let stride = w * 3;
        let (mut equal, mut pairs) = (0usize, 0usize);
        let mut bins = vec![0u32; 4096];
        let rows: Vec<&[[u8; 3]]> = raw.chunks_exact(stride).map(|r| r.as_chunks().0).collect();
        for (y, row) in rows.iter().enumerate() {
            for [r, g, b] in row.iter() {
                let bin = (usize::from(r >> 4) << 8) | (usize::from(g >> 4) << 4);
                bins[bin | usize::from(b >> 4)] += 1;
            }
            equal += row.iter().zip(&row[1..]).filter(|(a, b)| a == b).count();
            pairs += w - 1;
            if let Some(below) = rows.get(y + 1) {
                equal += row.iter().zip(below.iter()).filter(|(a, b)| a == b).count();
                pairs += w;
            }
        }
        bins.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = bins[..8].iter().map(|&c| u64::from(c)).sum();
        Self {
            flat_ratio: if pairs == 0 {
                1.0
            } else {
                (equal as f64 / pairs as f64) as f32
            },
            palette_share: (top as f64 / (w * h) as f64) as f32,
        }
    }

    /// Non-natural score, 0..=1: `ramp(flat_ratio, 0.25, 0.75) * ramp(palette_share, 0.5, 0.9)`,
    /// where `ramp(v, lo, hi)` rises linearly from 0 at `lo` to 1 at `hi`. Both must be high:
    /// grayscale or night photos have a concentrated palette but no exact flats; smooth synthetic
    /// gradients have flats but a wide palette (they score 0, a known miss).
    pub fn non_natural(&self) -> f32 {
        ramp(self.flat_ratio, 0.25, 0.75) * ramp(self.palette_share, 0.5, 0.9)
    }
}

fn ramp(value: f32, low: f32, high: f32) -> f32 {
    ((value - low) / (high - low)).clamp(0.0, 1.0)
}

/// How one caption word counts for [`HeuristicScorer::relevance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    /// An alphabetic word that can name something (in the vocabulary, when one is set).
    Content,
    /// A function word (`the`, `of`, ...): counted neither way.
    Function,
    /// A number, code, file name, URL, boilerplate (`click`, `enlarge`, `image`, ...) or a word
    /// outside the vocabulary.
    Noise,
}

/// English function words, which neither help nor hurt a caption.
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "above", "after", "against", "all", "along", "also", "am", "among", "an", "and",
    "any", "are", "around", "as", "at", "be", "been", "before", "behind", "being", "below",
    "beside", "between", "both", "but", "by", "can", "could", "did", "do", "does", "down",
    "during", "each", "few", "for", "from", "had", "has", "have", "he", "her", "here", "hers",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more", "most",
    "my", "near", "next", "no", "nor", "not", "of", "off", "on", "onto", "or", "other", "our",
    "out", "over", "own", "she", "so", "some", "such", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "those", "through", "to", "too", "toward", "towards",
    "under", "up", "upon", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "why", "will", "with", "within", "without", "would", "you", "your",
];

/// Words that name the web page's furniture, not what an image shows.
const BOILERPLATE_WORDS: &[&str] = &[
    "banner",
    "button",
    "click",
    "default",
    "enlarge",
    "gif",
    "icon",
    "image",
    "images",
    "img",
    "jpeg",
    "jpg",
    "pic",
    "pics",
    "picture",
    "pictures",
    "photo",
    "photos",
    "placeholder",
    "png",
    "spacer",
    "thumb",
    "thumbnail",
    "untitled",
    "view",
    "webp",
];

/// The default [`Scorer`]: pixel statistics for `nsfw` and caption word shapes for
/// `relevance`. A placeholder with no learned weights; see the module documentation for what it
/// cannot see.
#[derive(Debug, Clone, Default)]
pub struct HeuristicScorer {
    vocabulary: Option<HashSet<String>>,
}

impl HeuristicScorer {
    /// A scorer that judges caption words by their shape alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scorer that also requires content words to be in `words` (compared lower-case), e.g.
    /// the whole words of a BERT `vocab.txt`; `##` word pieces and `[SPECIAL]` tokens in `words`
    /// are skipped. A WordPiece vocabulary is a small proxy for a dictionary: bert-base-uncased
    /// has about 21 000 whole words and splits rarer nouns ("giraffe") into pieces, which then
    /// count as noise.
    pub fn with_vocabulary<I, S>(words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let vocabulary = words
            .into_iter()
            .map(|w| w.as_ref().trim().to_lowercase())
            .filter(|w| !w.is_empty() && !w.starts_with("##") && !w.starts_with('['))
            .collect();
        Self {
            vocabulary: Some(vocabulary),
        }
    }

    /// How `word` (one whitespace-separated token of a caption) counts.
    pub fn word_kind(&self, word: &str) -> WordKind {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        if word.is_empty() {
            return WordKind::Function;
        }
        let lower = word.to_lowercase();
        if FUNCTION_WORDS.contains(&lower.as_str()) {
            return WordKind::Function;
        }
        let shaped_like_a_word = word.chars().count() >= 2
            && word
                .chars()
                .all(|c| c.is_alphabetic() || c == '-' || c == '\'');
        let known = self
            .vocabulary
            .as_ref()
            .is_none_or(|vocabulary| vocabulary.contains(&lower));
        if shaped_like_a_word && known && !BOILERPLATE_WORDS.contains(&lower.as_str()) {
            WordKind::Content
        } else {
            WordKind::Noise
        }
    }

    /// Share of the caption's counted words (content + noise) that are content words; 0 when
    /// it has none (empty, or function words only). "a dog on the beach" scores 1,
    /// "IMG_2034.JPG" 0, "photo 3 of 12" 0, "Paris 2019 DSC_0042" 1/3.
    pub fn relevance(&self, caption: &str) -> f32 {
        let (mut content, mut noise) = (0u32, 0u32);
        for word in caption.split_whitespace() {
            match self.word_kind(word) {
                WordKind::Content => content += 1,
                WordKind::Noise => noise += 1,
                WordKind::Function => {}
            }
        }
        if content + noise == 0 {
            0.0
        } else {
            content as f32 / (content + noise) as f32
        }
    }
}

impl Scorer for HeuristicScorer {
    fn name(&self) -> &str {
        if self.vocabulary.is_some() {
            "heuristic-v1+vocabulary"
        } else {
            "heuristic-v1"
        }
    }

    fn score(&self, image: &RgbImage, caption: &str) -> Scores {
        Scores {
            nsfw: ImageStats::of(image).non_natural(),
            relevance: self.relevance(caption),
        }
    }
}
