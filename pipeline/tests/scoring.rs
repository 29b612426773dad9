//! Scoring hooks on the real photos under `assets/photos` and on synthetic images built here.

use std::path::PathBuf;
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use pipeline::imaging::{ImageConfig, process};
use pipeline::scoring::{HeuristicScorer, ImageStats, Scorer, Scores, ScoringConfig, WordKind};

fn assets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
}

/// The stored pixels of every real photo, as the ingest stage hands them to a scorer (the size
/// filter is relaxed so that chelsea.png, 451x300, is scored too). Computed once per run.
fn photo_pixels() -> &'static [(String, RgbImage)] {
    static PIXELS: OnceLock<Vec<(String, RgbImage)>> = OnceLock::new();
    PIXELS.get_or_init(load_photo_pixels)
}

fn load_photo_pixels() -> Vec<(String, RgbImage)> {
    let config = ImageConfig {
        min_height: 200,
        ..ImageConfig::default()
    };
    let mut out = Vec::new();
    for dir in [assets().join("photos"), assets().join("photos/darknet")] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
            .collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let done = process(&std::fs::read(&path).unwrap(), None, &config).unwrap();
            out.push((name, done.rgb));
        }
    }
    assert_eq!(out.len(), 20);
    out
}

/// Synthetic, non-natural images of 480x360: a solid colour, a two-colour logo, text-like
/// stripes of glyphs, a screenshot-like page and clip-art.
fn synthetic() -> Vec<(&'static str, RgbImage)> {
    let (w, h) = (480, 360);
    let white = Rgb([255, 255, 255]);
    let solid = RgbImage::from_pixel(w, h, Rgb([30, 120, 200]));
    let logo = RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (f64::from(x) - 240.0, f64::from(y) - 180.0);
        if dx * dx + dy * dy < 120.0 * 120.0 {
            Rgb([220, 30, 40])
        } else {
            white
        }
    });
    let text = RgbImage::from_fn(w, h, |x, y| {
        let on_line = (y / 12) % 2 == 0;
        let in_glyph = (x / 3 + y / 12) % 5 != 0 && x % 7 < 3;
        if on_line && in_glyph {
            Rgb([0, 0, 0])
        } else {
            white
        }
    });
    let screenshot = RgbImage::from_fn(w, h, |x, y| {
        if y < 40 {
            Rgb([40, 90, 180])
        } else if x < 100 {
            Rgb([240, 240, 240])
        } else if (y / 10) % 3 == 0 && (x * 7 + y) % 11 < 6 && x < 440 {
            Rgb([30, 30, 30])
        } else {
            white
        }
    });
    let clip_art = RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (f64::from(x) - 200.0, f64::from(y) - 200.0);
        let r = (dx * dx + dy * dy).sqrt();
        if (r - 100.0).abs() < 3.0 {
            Rgb([0, 0, 0])
        } else if r < 100.0 {
            Rgb([250, 200, 20])
        } else if y > 300 {
            Rgb([60, 180, 75])
        } else {
            Rgb([135, 206, 235])
        }
    });
    vec![
        ("solid", solid),
        ("logo", logo),
        ("text", text),
        ("screenshot", screenshot),
        ("clip_art", clip_art),
    ]
}

/// `rgb` as a downloaded file of `format` would arrive at the scorer: encoded, then through
/// [`process`].
fn through_pipeline(rgb: &RgbImage, format: image::ImageFormat) -> RgbImage {
    let mut bytes = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut bytes, format).unwrap();
    process(bytes.get_ref(), None, &ImageConfig::default())
        .unwrap()
        .rgb
}

const GOOD_CAPTION: &str = "A red motorcycle parked on a cobbled street";

#[test]
fn natural_photos_score_low() {
    let scorer = HeuristicScorer::new();
    for (name, rgb) in photo_pixels() {
        let stats = ImageStats::of(rgb);
        let scores = scorer.score(rgb, GOOD_CAPTION);
        assert!(
            scores.nsfw < 0.1,
            "{name}: non-natural {} from {stats:?}",
            scores.nsfw
        );
        assert_eq!(ScoringConfig::default().verdict(&scores), None, "{name}");
    }
}

#[test]
fn synthetic_images_score_high_and_are_dropped() {
    let scorer = HeuristicScorer::new();
    let config = ScoringConfig::default();
    for (name, rgb) in synthetic() {
        // As PNG (exact colours) and as quality-75 JPEG (ringing around edges).
        let png = through_pipeline(&rgb, image::ImageFormat::Png);
        let jpeg = through_pipeline(&rgb, image::ImageFormat::Jpeg);
        for (how, pixels) in [("raw", &rgb), ("png", &png), ("jpeg", &jpeg)] {
            let stats = ImageStats::of(pixels);
            let scores = scorer.score(pixels, GOOD_CAPTION);
            assert!(
                scores.nsfw > 0.7,
                "{name} ({how}): non-natural {} from {stats:?}",
                scores.nsfw
            );
            assert_eq!(config.verdict(&scores), Some("nsfw_or_non_natural"));
        }
    }
}

#[test]
fn image_stats_extremes() {
    let solid = RgbImage::from_pixel(10, 10, Rgb([1, 2, 3]));
    let stats = ImageStats::of(&solid);
    assert_eq!((stats.flat_ratio, stats.palette_share), (1.0, 1.0));
    assert_eq!(stats.non_natural(), 1.0);
    // Every neighbour differs and 9 colours fill the image evenly: 8 of 9 in the top 8.
    let checker = RgbImage::from_fn(9, 9, |x, y| {
        let v = ((x + 3 * y) % 9) as u8 * 28;
        Rgb([v, v, v])
    });
    let stats = ImageStats::of(&checker);
    assert_eq!(stats.flat_ratio, 0.0);
    assert!((stats.palette_share - 8.0 / 9.0).abs() < 1e-6);
    assert_eq!(stats.non_natural(), 0.0);
    let one_pixel = RgbImage::from_pixel(1, 1, Rgb([9, 9, 9]));
    assert_eq!(ImageStats::of(&one_pixel).flat_ratio, 1.0);
}

#[test]
fn relevance_rewards_content_words() {
    let scorer = HeuristicScorer::new();
    let cases = [
        ("a dog on the beach", 1.0),
        ("A red motorcycle parked on a cobbled street.", 1.0),
        ("", 0.0),
        ("the of and", 0.0),
        ("IMG_2034.JPG", 0.0),
        ("DSC00123", 0.0),
        ("photo 3 of 12", 0.0),
        ("click to enlarge", 0.0),
        ("https://example.com/a.jpg", 0.0),
        ("Paris 2019 DSC_0042", 1.0 / 3.0),
        ("Eiffel tower at night, 2019", 3.0 / 4.0),
    ];
    for (caption, expected) in cases {
        let got = scorer.relevance(caption);
        assert!((got - expected).abs() < 1e-6, "{caption:?}: {got}");
    }
    assert_eq!(scorer.word_kind("(Dog),"), WordKind::Content);
    assert_eq!(scorer.word_kind("The"), WordKind::Function);
    assert_eq!(scorer.word_kind("x200"), WordKind::Noise);
    assert_eq!(scorer.word_kind("thumbnail"), WordKind::Noise);
    assert_eq!(scorer.name(), "heuristic-v1");
}

#[test]
fn vocabulary_marks_made_up_words_as_noise() {
    let vocab = std::fs::read_to_string(assets().join("minilm/vocab.txt")).unwrap();
    let scorer = HeuristicScorer::with_vocabulary(vocab.lines());
    assert_eq!(scorer.name(), "heuristic-v1+vocabulary");
    assert_eq!(scorer.relevance("a dog on the beach"), 1.0);
    assert_eq!(scorer.relevance("qwzx vbnmk"), 0.0);
    assert_eq!(HeuristicScorer::new().relevance("qwzx vbnmk"), 1.0);
    // A WordPiece vocabulary is not a dictionary: "giraffe" is split into pieces in BERT's, so
    // it counts as noise here, a known cost of using it as the word list.
    assert_eq!(scorer.relevance("zebra eating leaves xyzzyq"), 3.0 / 4.0);
    assert_eq!(scorer.word_kind("giraffe"), WordKind::Noise);
    // Word pieces and special tokens are not words.
    let small = HeuristicScorer::with_vocabulary(["[SEP]", "##ing", " Dog "]);
    assert_eq!(small.word_kind("dog"), WordKind::Content);
    assert_eq!(small.word_kind("ing"), WordKind::Noise);
    assert_eq!(small.word_kind("sep"), WordKind::Noise);
}

#[test]
fn thresholds_drop_what_they_should() {
    let config = ScoringConfig::default();
    let scorer = HeuristicScorer::new();
    let photos = photo_pixels();
    let (_, horses) = photos.iter().find(|(n, _)| n == "horses.jpg").unwrap();
    let (_, logo) = synthetic().into_iter().find(|(n, _)| *n == "logo").unwrap();
    let verdict = |image: &RgbImage, caption: &str| config.verdict(&scorer.score(image, caption));
    assert_eq!(verdict(horses, "Horses grazing in a field"), None);
    assert_eq!(verdict(horses, "IMG_2034.JPG"), Some("low_relevance"));
    assert_eq!(verdict(horses, "photo 1 of 12"), Some("low_relevance"));
    // Non-natural wins over low relevance.
    assert_eq!(verdict(&logo, "IMG_2034.JPG"), Some("nsfw_or_non_natural"));
    assert_eq!(
        verdict(&logo, "Company logo of Acme"),
        Some("nsfw_or_non_natural")
    );
    // Boundaries and NaN.
    let at = |nsfw, relevance| config.verdict(&Scores { nsfw, relevance });
    assert_eq!(at(0.5, 0.5), None);
    assert_eq!(at(0.51, 1.0), Some("nsfw_or_non_natural"));
    assert_eq!(at(0.0, 0.49), Some("low_relevance"));
    assert_eq!(at(f32::NAN, 1.0), Some("nsfw_or_non_natural"));
    assert_eq!(at(0.0, f32::NAN), Some("low_relevance"));
    let lenient = ScoringConfig {
        max_nsfw: 1.0,
        min_relevance: 0.0,
    };
    assert_eq!(
        lenient.verdict(&Scores {
            nsfw: 1.0,
            relevance: 0.0
        }),
        None
    );
}

/// A learned scorer plugs in through the trait; this one stands in for, e.g., detector labels
/// matched against the caption.
struct LabelScorer {
    labels: Vec<&'static str>,
}

impl Scorer for LabelScorer {
    fn name(&self) -> &str {
        "labels-test"
    }

    fn score(&self, image: &RgbImage, caption: &str) -> Scores {
        let caption = caption.to_lowercase();
        let hits = self.labels.iter().filter(|l| caption.contains(*l)).count();
        Scores {
            nsfw: ImageStats::of(image).non_natural(),
            relevance: hits as f32 / self.labels.len() as f32,
        }
    }
}

#[test]
fn scorers_plug_in_as_trait_objects() {
    let scorers: Vec<Box<dyn Scorer>> = vec![
        Box::new(HeuristicScorer::new()),
        Box::new(LabelScorer {
            labels: vec!["horse", "person"],
        }),
    ];
    let photos = photo_pixels();
    let (_, horses) = photos.iter().find(|(n, _)| n == "horses.jpg").unwrap();
    let names: Vec<&str> = scorers.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["heuristic-v1", "labels-test"]);
    let learned = scorers[1].score(horses, "Horses and a person");
    assert_eq!(learned.relevance, 1.0);
    // Shared across threads.
    std::thread::scope(|s| {
        for scorer in &scorers {
            s.spawn(|| scorer.score(horses, "horses"));
        }
    });
}

#[test]
fn scoring_config_defaults() {
    let config: ScoringConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, ScoringConfig::default());
    assert_eq!((config.max_nsfw, config.min_relevance), (0.5, 0.5));
    let config: ScoringConfig = serde_json::from_str(r#"{"min_relevance": 0.3}"#).unwrap();
    assert_eq!(config.min_relevance, 0.3);
    assert!(serde_json::from_str::<ScoringConfig>(r#"{"max_nfsw": 0.3}"#).is_err());
}
