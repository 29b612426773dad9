//! The caption filter (`pipeline::text`): each rule pinned on hand-made texts, then the whole
//! filter on the real alt and title texts of the Common Crawl fixtures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use pipeline::text::{DROP_REASONS, TextFilter, TextFilterConfig, TextVerdict};
use schemas::pair_shard::TextSource;
use wordpiece::WordPiece;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

/// The trainer's vocabulary (MiniLM, uncased BERT).
static VOCAB: LazyLock<Arc<WordPiece>> = LazyLock::new(|| {
    let path = assets().join("minilm/vocab.txt");
    Arc::new(WordPiece::from_file(&path).unwrap_or_else(|e| {
        panic!("{e:#}: run `scripts/fetch-assets` first");
    }))
});

fn filter_with(config: TextFilterConfig) -> TextFilter {
    TextFilter::new(config, Arc::clone(&VOCAB)).unwrap()
}

fn filter() -> TextFilter {
    filter_with(TextFilterConfig::default())
}

/// A filter that keeps every language, to test the other rules alone.
fn any_language() -> TextFilter {
    filter_with(TextFilterConfig {
        languages: vec![],
        ..TextFilterConfig::default()
    })
}

/// The kept caption, or a panic naming the drop.
fn kept(verdict: TextVerdict) -> String {
    match verdict {
        TextVerdict::Kept { text, .. } => text,
        TextVerdict::Dropped {
            reason, message, ..
        } => {
            panic!("expected kept, got {reason}: {message}")
        }
    }
}

/// The drop reason, or a panic naming the kept text.
fn reason(verdict: TextVerdict) -> &'static str {
    match verdict {
        TextVerdict::Dropped { reason, .. } => reason,
        TextVerdict::Kept { text, .. } => panic!("expected dropped, got kept {text:?}"),
    }
}

fn alt(filter: &TextFilter, text: &str) -> TextVerdict {
    filter.check(text, TextSource::Alt)
}

#[test]
fn the_filter_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<TextFilter>();
}

#[test]
fn config_reads_from_toml_with_defaults_and_refuses_unknown_keys() {
    let config: TextFilterConfig =
        toml::from_str("languages = [\"en\", \"de\"]\nmax_words = 20").unwrap();
    assert_eq!(config.languages, ["en", "de"]);
    assert_eq!(config.max_words, 20);
    assert_eq!(config.min_words, TextFilterConfig::default().min_words);
    let err = toml::from_str::<TextFilterConfig>("max_word = 20").unwrap_err();
    assert!(err.to_string().contains("max_word"), "{err}");

    let d = TextFilterConfig::default();
    assert_eq!(d.languages, ["en"]);
    assert_eq!((d.min_words, d.max_words), (3, 32));
    assert_eq!((d.min_chars, d.max_chars), (8, 256));
    assert_eq!(
        (d.max_sentences, d.max_pieces_per_word, d.max_spam_terms),
        (2, 3, 1)
    );
    assert_eq!(
        (
            d.min_language_confidence,
            d.min_known_word_ratio,
            d.max_oov_ratio
        ),
        (0.5, 0.75, 0.4)
    );
    for phrase in [
        "click to enlarge",
        "image",
        "photo",
        "thumbnail",
        "untitled",
    ] {
        assert!(
            d.boilerplate_phrases.iter().any(|p| p == phrase),
            "{phrase}"
        );
    }
    for phrase in ["stock photo", "no description", "placeholder"] {
        assert!(
            d.boilerplate_phrases.iter().any(|p| p == phrase),
            "{phrase}"
        );
    }
}

#[test]
fn bad_values_are_refused_with_the_key_named() {
    let bad = |config: TextFilterConfig| {
        TextFilter::new(config, Arc::clone(&VOCAB))
            .unwrap_err()
            .to_string()
    };
    let d = TextFilterConfig::default;
    let err = bad(TextFilterConfig {
        languages: vec!["eng".into()],
        ..d()
    });
    assert!(
        err.contains("text.languages") && err.contains("\"eng\"") && err.contains(" en,"),
        "{err}"
    );
    let err = bad(TextFilterConfig {
        min_words: 40,
        ..d()
    });
    assert!(err.contains("text.min_words"), "{err}");
    let err = bad(TextFilterConfig {
        max_oov_ratio: 1.5,
        ..d()
    });
    assert!(err.contains("text.max_oov_ratio"), "{err}");
    let err = bad(TextFilterConfig {
        max_sentences: 0,
        ..d()
    });
    assert!(err.contains("text.max_sentences"), "{err}");
    let err = bad(TextFilterConfig {
        spam_terms: vec!["buy now".into(), " -- ".into()],
        ..d()
    });
    assert!(err.contains("text.spam_terms[1]"), "{err}");
}

#[test]
fn english_is_kept_other_languages_are_dropped() {
    let f = filter();
    for text in [
        "A dog running on the beach",
        "Two children playing football in the park",
        "You are encouraged to log in; however, it is not mandatory",
    ] {
        match alt(&f, text) {
            TextVerdict::Kept {
                text: kept,
                language,
                language_score,
                source,
            } => {
                assert_eq!(kept, text);
                assert_eq!(language, "en");
                assert_eq!(source, TextSource::Alt);
                assert!((0.0..=1.0).contains(&language_score), "{language_score}");
            }
            dropped => panic!("{text:?}: {dropped:?}"),
        }
    }
    for (text, code) in [
        ("Die Braut und der Bräutigam schneiden die Torte", "de"),
        ("Frisches Gemüse auf dem Wochenmarkt", "de"),
        ("Les enfants jouent au football dans le parc", "fr"),
        ("Un chien qui court sur la plage", "fr"),
        ("一只狗在海滩上奔跑", "zh"),
        ("Los niños juegan al fútbol en el parque", "es"),
    ] {
        match alt(&f, text) {
            TextVerdict::Dropped {
                reason, language, ..
            } => {
                assert_eq!(reason, "language", "{text}");
                assert_eq!(language.as_deref(), Some(code), "{text}");
            }
            kept => panic!("{text:?}: {kept:?}"),
        }
    }
}

#[test]
fn short_english_that_whatlang_misplaces_is_kept_by_the_vocabulary() {
    // whatlang says Dutch (confidence 0.04) and Javanese (0.10); all words are vocabulary tokens.
    for text in ["Red apples in a wooden basket", "Man riding a bicycle"] {
        match alt(&filter(), text) {
            TextVerdict::Kept {
                language,
                language_score,
                ..
            } => assert_eq!((language.as_str(), language_score), ("en", 1.0)),
            dropped => panic!("{text:?}: {dropped:?}"),
        }
        // With the rescue off, whatlang's wrong guess stands.
        let strict = filter_with(TextFilterConfig {
            min_known_word_ratio: 1.1,
            ..TextFilterConfig::default()
        });
        assert_eq!(reason(alt(&strict, text)), "language", "{text}");
    }
    // A short German text does not pass for English: half its words are not vocabulary tokens.
    assert_eq!(
        reason(alt(&filter(), "Ein Hund läuft am Strand entlang")),
        "language"
    );
}

#[test]
fn the_kept_languages_are_configurable() {
    let german = filter_with(TextFilterConfig {
        languages: vec!["de".into()],
        ..TextFilterConfig::default()
    });
    let text = "Die Braut und der Bräutigam schneiden die Torte";
    assert_eq!(kept(alt(&german, text)), text);
    assert_eq!(
        reason(alt(&german, "Two children playing football in the park")),
        "language"
    );
    assert_eq!(kept(alt(&any_language(), text)), text);
}

#[test]
fn word_and_character_bounds_are_inclusive() {
    let f = any_language();
    assert_eq!(kept(alt(&f, "A red car")), "A red car");
    assert_eq!(reason(alt(&f, "Red car")), "too_short");
    // 4 words but 7 characters: below min_chars = 8; 8 characters pass.
    assert_eq!(reason(alt(&f, "a b c d")), "too_short");
    assert_eq!(kept(alt(&f, "a b c de")), "a b c de");
    // CJK ideographs count one word each.
    assert_eq!(reason(alt(&f, "海滩")), "too_short");
    assert_ne!(reason(alt(&f, "一只狗在海滩上奔跑")), "too_short");

    let words = |n: usize| {
        let pool = [
            "the", "big", "dog", "runs", "on", "green", "grass", "near", "a", "lake",
        ];
        (0..n)
            .map(|i| pool[i % pool.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(kept(alt(&f, &words(32))), words(32));
    assert_eq!(reason(alt(&f, &words(33))), "too_long");

    // 256 characters pass the character bound (and fail later on), 257 do not.
    let long = |n: usize| {
        format!(
            "{} {} {}",
            "x".repeat(84),
            "x".repeat(85),
            "x".repeat(n - 171)
        )
    };
    assert_eq!(long(256).chars().count(), 256);
    assert_ne!(reason(alt(&f, &long(256))), "too_long");
    assert_eq!(reason(alt(&f, &long(257))), "too_long");

    let narrow = filter_with(TextFilterConfig {
        languages: vec![],
        min_words: 2,
        max_words: 4,
        ..TextFilterConfig::default()
    });
    assert_eq!(kept(alt(&narrow, "Red cars")), "Red cars");
    assert_eq!(kept(alt(&narrow, "the red car here")), "the red car here");
    assert_eq!(reason(alt(&narrow, "the red car is here")), "too_long");
}

#[test]
fn the_first_sentences_within_the_word_bound_become_the_caption() {
    let f = any_language();
    let text = "Dr. Smith talks to students at the U.S. Embassy. The event was held on Monday. \
                It rained all day.";
    assert_eq!(
        kept(alt(&f, text)),
        "Dr. Smith talks to students at the U.S. Embassy. The event was held on Monday."
    );
    let one = filter_with(TextFilterConfig {
        languages: vec![],
        max_sentences: 1,
        ..TextFilterConfig::default()
    });
    assert_eq!(
        kept(alt(&one, text)),
        "Dr. Smith talks to students at the U.S. Embassy."
    );
    // e.g. and a lower-case continuation do not end a sentence.
    let text = "Fruit, e.g. Apples and pears. on a table";
    assert_eq!(kept(alt(&one, text)), text);
    // The second sentence is left out when it would pass max_words.
    let narrow = filter_with(TextFilterConfig {
        languages: vec![],
        max_words: 6,
        ..TextFilterConfig::default()
    });
    assert_eq!(
        kept(alt(&narrow, "A dog on the beach. It runs after a ball.")),
        "A dog on the beach."
    );
    assert_eq!(
        reason(alt(&narrow, "A dog on the beach runs after a ball. Nice.")),
        "too_long"
    );
}

#[test]
fn gibberish_is_out_of_vocabulary_and_normal_text_is_not() {
    let f = any_language();
    match alt(&f, "asdkjh qwpoeiru zxcmvn") {
        TextVerdict::Dropped {
            reason, message, ..
        } => {
            assert_eq!(reason, "oov");
            assert!(message.contains("3 of 3 words"), "{message}");
        }
        kept => panic!("{kept:?}"),
    }
    assert_eq!(
        kept(alt(&f, "A cat sitting on a windowsill")),
        "A cat sitting on a windowsill"
    );
    // With the default languages, gibberish does not pass for English either.
    assert_eq!(reason(alt(&filter(), "asdkjh qwpoeiru zxcmvn")), "language");
}

#[test]
fn oov_ratio_is_counted_exactly_on_a_tiny_vocabulary() {
    let tokens = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "runs", "a", "##b", "##c",
        "##d", ",", "!",
    ];
    let vocab = WordPiece::from_vocab(tokens.iter().map(|t| t.to_string()).collect()).unwrap();
    let f = TextFilter::new(
        TextFilterConfig {
            languages: vec![],
            max_oov_ratio: 0.25,
            ..TextFilterConfig::default()
        },
        Arc::new(vocab),
    )
    .unwrap();
    let message = |text: &str| match alt(&f, text) {
        TextVerdict::Dropped {
            reason: "oov",
            message,
            ..
        } => message,
        other => panic!("{text:?}: {other:?}"),
    };
    assert_eq!(kept(alt(&f, "the dog runs")), "the dog runs");
    // "abc" is three pieces (a ##b ##c): in vocabulary; "abcd" is four: out.
    assert_eq!(kept(alt(&f, "the dog runs abc")), "the dog runs abc");
    assert!(message("the dog abcd abcd").contains("2 of 4 words"));
    // 1 of 4 = 0.25 is not above max_oov_ratio; 2 of 4 is.
    assert_eq!(kept(alt(&f, "the dog zzz runs")), "the dog zzz runs");
    assert!(message("the dog zzz qqq").contains("2 of 4 words"));
    // Numbers and punctuation are not words here: "zzz" is 1 of 2.
    assert!(message("the zzz, 123 456 789!").contains("1 of 2 words"));
}

#[test]
fn boilerplate_is_removed_and_pure_boilerplate_is_dropped() {
    let f = filter();
    for (text, caption) in [
        (
            "Sunset over the bay (click to enlarge)",
            "Sunset over the bay",
        ),
        (
            "Sunset over the bay - Click to Enlarge",
            "Sunset over the bay",
        ),
        (
            "Sunset over the bay. Click here to enlarge.",
            "Sunset over the bay.",
        ),
        (
            "Photo: A dog running on the beach",
            "A dog running on the beach",
        ),
        (
            "A dog running on the beach | thumbnail",
            "A dog running on the beach",
        ),
        // A one-word phrase inside a sentence stays.
        (
            "Photo of a dog running on the beach",
            "Photo of a dog running on the beach",
        ),
    ] {
        assert_eq!(kept(alt(&f, text)), caption, "{text}");
    }
    for text in [
        "click to enlarge",
        "Click here",
        "Untitled",
        "image",
        "Photo 99",
        "photo No. 99",
        "Image 3 of 10",
        "No description",
        "Thumbnail - Click to enlarge",
        "Creative Commons License",
    ] {
        assert_eq!(reason(alt(&f, text)), "boilerplate", "{text}");
    }
    // What is left after the boilerplate is too short: boilerplate is the reason.
    assert_eq!(reason(alt(&f, "Sunset (click to enlarge)")), "boilerplate");

    // A configured list replaces the defaults.
    let custom = filter_with(TextFilterConfig {
        languages: vec![],
        boilerplate_phrases: vec!["sunset".into()],
        ..TextFilterConfig::default()
    });
    assert_eq!(reason(alt(&custom, "Sunset")), "boilerplate");
    assert_eq!(kept(alt(&custom, "click to enlarge")), "click to enlarge");
}

#[test]
fn spam_terms_are_removed_and_adverts_dropped() {
    let f = filter();
    assert_eq!(
        kept(alt(
            &f,
            "Beautiful red dress with lace sleeves - free shipping"
        )),
        "Beautiful red dress with lace sleeves"
    );
    assert_eq!(
        reason(alt(&f, "Buy now! Cheap viagra, free shipping")),
        "spam"
    );
    assert_eq!(reason(alt(&f, "Red dress - buy now")), "spam");
    let strict = filter_with(TextFilterConfig {
        max_spam_terms: 0,
        ..TextFilterConfig::default()
    });
    assert_eq!(
        reason(alt(
            &strict,
            "Beautiful red dress with lace sleeves - free shipping"
        )),
        "spam"
    );
}

#[test]
fn urls_addresses_and_file_names_are_removed() {
    let f = filter();
    for (text, cleaned) in [
        ("IMG_1234.jpg", ""),
        ("DSC0001", ""),
        ("foo-bar_2.png", ""),
        ("DSC0001 A dog on the beach", "A dog on the beach"),
        ("A dog on the beach foo-bar_2.png", "A dog on the beach"),
        (
            "A dog on the beach (IMG_20190701_123456)",
            "A dog on the beach",
        ),
        ("A dog on the beach - P1010123.JPG", "A dog on the beach"),
        ("A dog on the beach | www.example.com", "A dog on the beach"),
        (
            "A dog on the beach, by example.co.uk",
            "A dog on the beach, by",
        ),
        (
            "See https://example.com/a?b=c for a dog on the beach",
            "See for a dog on the beach",
        ),
        (
            "A dog on the beach (jane.doe@example.org)",
            "A dog on the beach",
        ),
        (
            "!!! Amazing sunset over the sea !!!",
            "Amazing sunset over the sea!",
        ),
        ("\"A dog   on the\n beach\"", "\"A dog on the beach\""),
        (
            "well-known 3.5 km trail, don't miss it",
            "well-known 3.5 km trail, don't miss it",
        ),
    ] {
        assert_eq!(f.clean(text), cleaned, "{text}");
    }
    assert_eq!(reason(alt(&f, "IMG_1234.jpg")), "no_text");
    assert_eq!(reason(alt(&f, "http://example.com/a.jpg")), "no_text");
    assert_eq!(reason(alt(&f, "  \n ")), "no_text");
    assert_eq!(reason(alt(&f, "496")), "no_text");
}

#[test]
fn options_are_tried_in_preference_order() {
    let f = filter();
    let good_alt = ("A dog running on the beach", TextSource::Alt);
    let good_title = (
        "Two children playing football in the park",
        TextSource::Title,
    );
    let good_context = (
        "Fresh vegetables at the farmers market",
        TextSource::Context,
    );
    let bad_alt = ("IMG_1234.jpg", TextSource::Alt);
    let bad_title = ("Next", TextSource::Title);

    let source_of = |v: TextVerdict| match v {
        TextVerdict::Kept { source, .. } => source,
        TextVerdict::Dropped { reason, .. } => panic!("dropped: {reason}"),
    };
    assert_eq!(
        source_of(f.choose(&[good_alt, good_title, good_context])),
        TextSource::Alt
    );
    assert_eq!(
        source_of(f.choose(&[bad_alt, good_title, good_context])),
        TextSource::Title
    );
    assert_eq!(
        source_of(f.choose(&[bad_alt, bad_title, good_context])),
        TextSource::Context
    );
    // Nothing passes: the preferred text's reason is reported.
    match f.choose(&[bad_alt, bad_title]) {
        TextVerdict::Dropped {
            reason, message, ..
        } => {
            assert_eq!(reason, "no_text");
            assert!(message.starts_with("alt "), "{message}");
        }
        kept => panic!("{kept:?}"),
    }
    assert_eq!(reason(f.choose(&[bad_title, bad_alt])), "boilerplate");
    assert_eq!(reason(f.choose(&[])), "no_text");
    // A language drop reports the language it found.
    match f.choose(&[(
        "Les enfants jouent au football dans le parc",
        TextSource::Alt,
    )]) {
        TextVerdict::Dropped {
            language,
            language_score,
            ..
        } => {
            assert_eq!(language.as_deref(), Some("fr"));
            assert!(language_score.is_some_and(|s| s >= 0.5));
        }
        kept => panic!("{kept:?}"),
    }
}

/// `alt` and `title` texts of the fixture's WAT links: (source, text).
fn wat_texts() -> Vec<(TextSource, String)> {
    fn walk(value: &serde_json::Value, out: &mut Vec<(TextSource, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                if map.contains_key("path") {
                    for (key, source) in [("alt", TextSource::Alt), ("title", TextSource::Title)] {
                        if let Some(text) = map.get(key).and_then(|v| v.as_str()) {
                            out.push((source, text.to_owned()));
                        }
                    }
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = assets().join("commoncrawl/CC-MAIN-20140820021334-00006.warc.wat");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `scripts/fetch-assets` first", path.display()));
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        walk(&serde_json::from_str(line).unwrap(), &mut out);
    }
    out
}

/// `alt="..."` and `title="..."` attribute values in the fixture WARC's HTML, common entities
/// decoded.
fn warc_texts() -> Vec<(TextSource, String)> {
    let path = assets().join("commoncrawl/CC-MAIN-20140820021334-00006.warc");
    let bytes = std::fs::read(&path).unwrap();
    let html = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for (needle, source) in [
        (" alt=\"", TextSource::Alt),
        (" title=\"", TextSource::Title),
    ] {
        for (at, _) in html.match_indices(needle) {
            let value = &html[at + needle.len()..];
            let Some(end) = value.find('"') else { continue };
            let decoded = value[..end]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&nbsp;", " ")
                .replace("&amp;", "&");
            out.push((source, decoded));
        }
    }
    out
}

#[test]
fn real_common_crawl_alt_and_title_texts() {
    let f = filter();
    // The WAT's four image alt texts: a number, two viewer labels and a licence badge.
    let wat = wat_texts();
    let wat_alts: Vec<&str> = wat
        .iter()
        .filter(|(s, _)| *s == TextSource::Alt)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        wat_alts,
        ["496", "Previous", "Next", "Creative Commons License"]
    );
    let reasons: Vec<&str> = wat_alts.iter().map(|t| reason(alt(&f, t))).collect();
    assert_eq!(
        reasons,
        ["no_text", "boilerplate", "boilerplate", "boilerplate"]
    );

    let texts: Vec<(TextSource, String)> = wat.into_iter().chain(warc_texts()).collect();
    assert!(texts.len() > 1000, "{} texts", texts.len());
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kept_texts = Vec::new();
    for (source, text) in &texts {
        match f.check(text, *source) {
            TextVerdict::Kept { text, .. } => {
                *counts.entry("kept").or_default() += 1;
                kept_texts.push(text);
            }
            TextVerdict::Dropped { reason, .. } => {
                assert!(DROP_REASONS.contains(&reason), "{reason}");
                *counts.entry(reason).or_default() += 1;
            }
        }
    }
    println!("{} real alt/title texts: {counts:?}", texts.len());
    println!("kept: {kept_texts:#?}");
    let kept_count = counts.get("kept").copied().unwrap_or(0);
    assert!(kept_count > 0 && kept_count < texts.len(), "{counts:?}");

    // The gallery's 855 images are "photo No. N" (alt) and "Photo N" (title): all boilerplate.
    assert_eq!(reason(alt(&f, "photo No. 850")), "boilerplate");
    assert!(counts["boilerplate"] >= 2 * 850, "{counts:?}");
    // A real English title survives whole.
    let title = "You are encouraged to log in; however, it is not mandatory [o]";
    assert!(texts.iter().any(|(_, t)| t == title));
    assert_eq!(kept(f.check(title, TextSource::Title)), title);
    assert!(
        kept_texts
            .iter()
            .any(|t| t == "Should the browser remember your name?")
    );
}
