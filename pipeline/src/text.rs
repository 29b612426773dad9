//! The caption filter: LAIT's "text filtering" step (`docs/imagebert.md`, "Data (LAIT)", step 3:
//! text from alt / title attributes and surrounding text, heuristic cleaning of spam and
//! boilerplate such as "click to enlarge", normal-length sentences only, no sentences with a high
//! out-of-vocabulary ratio; and step 1's "drop non-English", applied here to the caption itself).
//!
//! [`TextFilter::choose`] tries a candidate's texts in LAIT preference order (alt > title >
//! context, see [`crate::sources::Candidate::text_options`]) and keeps the first that survives.
//! One text goes through, in this order (the first failing step names the drop reason):
//!
//! 1. **Cleaning** ([`TextFilter::clean`]): whitespace collapsed
//!    ([`crate::sources::clean_text`]); URLs, e-mail addresses, file names (`IMG_1234.jpg`,
//!    `DSC0001`, `foo-bar_2.png`, any token with `_`) and numbering (`No. 12`, `#3`, `3 of 10`)
//!    removed; boilerplate phrases and spam terms removed; what is left of punctuation tidied
//!    (empty or unmatched brackets, doubled marks, separators at the ends).
//! 2. `spam`: more than [`TextFilterConfig::max_spam_terms`] spam terms.
//! 3. `no_text` / `boilerplate` / `spam`: no letter left; `boilerplate` (or `spam`) when something
//!    was removed as such, else `no_text`.
//! 4. **Sentences**: the first [`TextFilterConfig::max_sentences`] sentences that fit in
//!    [`TextFilterConfig::max_words`] become the caption (`too_long` if the first alone does not,
//!    or if the caption has more than [`TextFilterConfig::max_chars`] characters).
//! 5. `too_short` (or `boilerplate` / `spam` when removals made it short): fewer than
//!    [`TextFilterConfig::min_words`] words or [`TextFilterConfig::min_chars`] characters.
//! 6. `language`: not in [`TextFilterConfig::languages`] (see [`TextFilterConfig`] for the rule
//!    on short texts, where language identification is unreliable).
//! 7. `oov`: more than [`TextFilterConfig::max_oov_ratio`] of its words out of the WordPiece
//!    vocabulary.
//!
//! Every reason code is listed in [`DROP_REASONS`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use anyhow::{Result, bail};
use regex::{Captures, Regex};
use schemas::pair_shard::TextSource;
use serde::Deserialize;
use whatlang::Lang;
use wordpiece::{WordPiece, basic_tokenize};

use crate::sources::clean_text;

/// Every `drop_reason` this filter gives.
pub const DROP_REASONS: [&str; 7] = [
    "no_text",
    "spam",
    "boilerplate",
    "too_long",
    "too_short",
    "language",
    "oov",
];

/// `[text]`: cleaning, length, language and out-of-vocabulary rules for captions.
///
/// LAIT's thresholds are not published (`docs/imagebert.md`: "thresholds of 3-5 are
/// unconfirmed"); each default below says why it was chosen.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextFilterConfig {
    /// ISO 639-1 codes of the languages to keep; empty keeps every language (it is still
    /// identified and recorded). Default `["en"]`: LAIT drops non-English text, and the trainer's
    /// vocabulary is English.
    pub languages: Vec<String>,
    /// Language identification (whatlang's trigram model) decides alone when its confidence
    /// (0..=1) reaches this. Default 0.5: on short captions whatlang's confidence is low even when
    /// right, and below 0.5 it mislabels plain English ("Red apples in a wooden basket": Dutch,
    /// 0.04); at or above 0.5 its answer was right on every caption tried.
    pub min_language_confidence: f32,
    /// Below [`Self::min_language_confidence`], a text whatlang places in a kept language is kept;
    /// one it places elsewhere is still kept, as [`Self::vocabulary_language`], when at least this
    /// share of its words are whole tokens of the WordPiece vocabulary (recorded as its
    /// `language_score`). Default 0.75: English captions score 0.75–1.0 (a rare word splits into
    /// pieces), short German, French, Spanish, Italian, Dutch and Portuguese ones mostly
    /// 0.2–0.7. A value above 1 turns this rescue off.
    pub min_known_word_ratio: f32,
    /// The language of the WordPiece vocabulary, for the rescue above; it applies only when this
    /// language is in [`Self::languages`]. Default `"en"` (the trainer's uncased BERT vocabulary).
    pub vocabulary_language: String,
    /// Fewest words (whitespace-separated tokens with a letter or digit; each CJK ideograph or kana
    /// counts as one) a caption may have.
    /// Default 3: one- and two-word alt texts are labels ("Next", "Hotel lobby", "Logo"), not
    /// descriptions; Conceptual Captions-style captions have three or more.
    pub min_words: usize,
    /// Most words a caption may have. Default 32: LAIT's mean caption is 13 words; 32 words are
    /// about 40 WordPiece tokens, which fits the trainer's default text length of 44 ids with
    /// `[CLS]`/`[SEP]`, so kept captions are not cut. Longer alt texts are mostly keyword lists.
    pub max_words: usize,
    /// Fewest characters a caption may have. Default 8: three real words ("A red car") have
    /// more; "a b c" has fewer.
    pub min_chars: usize,
    /// Most characters a caption may have. Default 256: 32 words of normal length (about 6
    /// characters each with the space) fit easily; it stops a few very long tokens that the word
    /// count lets through.
    pub max_chars: usize,
    /// Most sentences kept from one text: the first ones, as many as fit in
    /// [`Self::max_words`]. Default 2: a caption is one or two sentences (LAIT's mean is 13
    /// words); later sentences of surrounding text are rarely about the image.
    pub max_sentences: usize,
    /// Most out-of-vocabulary words a caption may have, as a share of its words with a letter.
    /// Default 0.4: a three-word caption may hold one rare name (0.33), a five-word one two;
    /// gibberish and machine-made strings score near 1.
    pub max_oov_ratio: f32,
    /// A word is out of vocabulary when WordPiece maps it to `[UNK]` or splits it into more than
    /// this many pieces. Default 3: ordinary English words are one piece, inflected or compound
    /// ones two or three ("windowsill" = window ##sill); gibberish ("qwpoeiru"), concatenated
    /// tokens ("bestcheapweddingdress") and IDs need more.
    pub max_pieces_per_word: usize,
    /// Phrases removed as boilerplate, matched case-insensitively on whole words. A phrase of two
    /// or more words is removed wherever it appears ("Sunset (click to enlarge)" → "Sunset"); a
    /// one-word phrase only when it is a whole segment of the text, between separators such as
    /// `|`, `:`, `-`, brackets or sentence ends ("Photo: a dog" → "a dog", but "Photo of a dog"
    /// stays), numbers ignored ("Photo 12"). Setting the list replaces the defaults,
    /// [`DEFAULT_BOILERPLATE_PHRASES`]: link and viewer labels, placeholders and badges seen as
    /// alt text ("click to enlarge", "image", "photo", "thumbnail", "untitled", "stock photo",
    /// "no description", "placeholder", "previous", "next", "creative commons license", ...).
    pub boilerplate_phrases: Vec<String>,
    /// Advertising and spam terms, matched case-insensitively on whole words anywhere, and
    /// removed. Default [`DEFAULT_SPAM_TERMS`]: shop calls to action and pharma/download spam
    /// ("buy now", "free shipping", "best price", "free download", "viagra", ...), chosen to be
    /// terms that do not occur in descriptions of what a picture shows.
    pub spam_terms: Vec<String>,
    /// Most spam terms a text may hold; more drops it as `spam` (removing an advert's terms
    /// leaves an advert). Default 1: one trailing "free shipping" is cut from a product caption,
    /// two such terms mark an advert. 0 drops any text with a spam term.
    pub max_spam_terms: usize,
}

/// Default [`TextFilterConfig::boilerplate_phrases`]: UI labels, placeholders and badges that web
/// pages use as alt or title text.
pub const DEFAULT_BOILERPLATE_PHRASES: &[&str] = &[
    // viewer and link labels
    "click to enlarge",
    "click here to enlarge",
    "click for larger image",
    "click for larger view",
    "click to view",
    "click to zoom",
    "click image to enlarge",
    "click here",
    "view larger image",
    "view larger",
    "view full size",
    "full size image",
    "larger image",
    "enlarge image",
    "open in new window",
    "read more",
    "more info",
    "see more",
    "zoom",
    "enlarge",
    "previous",
    "next",
    "prev",
    "back",
    "home",
    "play",
    "download",
    "share",
    "print",
    // the word for a picture, alone
    "image",
    "images",
    "img",
    "photo",
    "photos",
    "picture",
    "pictures",
    "pic",
    "pics",
    "thumbnail",
    "thumb",
    "gallery",
    "slide",
    "slideshow",
    "screenshot",
    "stock photo",
    "stock image",
    "stock photography",
    "featured image",
    "product image",
    "main image",
    // placeholders
    "untitled",
    "untitled image",
    "no title",
    "no description",
    "no description available",
    "no image",
    "no image available",
    "image not found",
    "image not available",
    "image unavailable",
    "placeholder",
    "spacer",
    "blank",
    "default",
    "avatar",
    "logo",
    "icon",
    "banner",
    "loading",
    "alt",
    "alt text",
    "null",
    "undefined",
    "none",
    // badges and notices
    "creative commons license",
    "all rights reserved",
    "copyright",
    "rss feed",
    "facebook",
    "twitter",
    "pinterest",
    "instagram",
];

/// Default [`TextFilterConfig::spam_terms`].
pub const DEFAULT_SPAM_TERMS: &[&str] = &[
    "buy now",
    "shop now",
    "order now",
    "call now",
    "add to cart",
    "free shipping",
    "best price",
    "best prices",
    "lowest price",
    "lowest prices",
    "cheap price",
    "discount code",
    "coupon code",
    "promo code",
    "limited time offer",
    "special offer",
    "money back guarantee",
    "free download",
    "download free",
    "download now",
    "hd wallpaper",
    "hd wallpapers",
    "wallpaper hd",
    "click here to buy",
    "work from home",
    "make money online",
    "payday loan",
    "payday loans",
    "replica watches",
    "online casino",
    "viagra",
    "cialis",
    "xxx",
];

impl Default for TextFilterConfig {
    fn default() -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Self {
            languages: vec!["en".to_owned()],
            min_language_confidence: 0.5,
            min_known_word_ratio: 0.75,
            vocabulary_language: "en".to_owned(),
            min_words: 3,
            max_words: 32,
            min_chars: 8,
            max_chars: 256,
            max_sentences: 2,
            max_oov_ratio: 0.4,
            max_pieces_per_word: 3,
            boilerplate_phrases: strings(DEFAULT_BOILERPLATE_PHRASES),
            spam_terms: strings(DEFAULT_SPAM_TERMS),
            max_spam_terms: 1,
        }
    }
}

impl TextFilterConfig {
    /// Refuses values that can't work, naming the key (`text.<key>`).
    pub fn validate(&self) -> Result<()> {
        let codes = self.languages.iter().map(|c| ("languages", c));
        for (key, code) in codes.chain([("vocabulary_language", &self.vocabulary_language)]) {
            if lang_of(code).is_none() {
                bail!(
                    "text.{key}: unknown language code {code:?}; known ISO 639-1 codes: {}",
                    Lang::all()
                        .iter()
                        .map(|&l| iso639_1(l))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        for (key, value) in [
            ("min_language_confidence", self.min_language_confidence),
            ("max_oov_ratio", self.max_oov_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                bail!("text.{key} is {value}: it must be within 0..=1");
            }
        }
        if self.min_known_word_ratio.is_nan() || self.min_known_word_ratio < 0.0 {
            bail!(
                "text.min_known_word_ratio is {}: it must be at least 0",
                self.min_known_word_ratio
            );
        }
        if self.min_words == 0 || self.min_words > self.max_words {
            bail!(
                "text.min_words ({}) must be at least 1 and at most text.max_words ({})",
                self.min_words,
                self.max_words
            );
        }
        if self.min_chars > self.max_chars {
            bail!(
                "text.min_chars ({}) must be at most text.max_chars ({})",
                self.min_chars,
                self.max_chars
            );
        }
        if self.max_sentences == 0 {
            bail!("text.max_sentences must be at least 1");
        }
        if self.max_pieces_per_word == 0 {
            bail!("text.max_pieces_per_word must be at least 1");
        }
        for (key, list) in [
            ("boilerplate_phrases", &self.boilerplate_phrases),
            ("spam_terms", &self.spam_terms),
        ] {
            if let Some(i) = list.iter().position(|p| normalize(p).is_empty()) {
                bail!("text.{key}[{i}] has no letter");
            }
        }
        Ok(())
    }
}

/// What the filter made of a candidate's texts.
#[derive(Debug, Clone, PartialEq)]
pub enum TextVerdict {
    /// A text survived: it is the pair's caption.
    Kept {
        /// The cleaned caption.
        text: String,
        /// Which of the candidate's texts it came from.
        source: TextSource,
        /// ISO 639-1 code of its language.
        language: String,
        /// Confidence of `language`, 0..=1: whatlang's confidence, or the share of whole
        /// vocabulary words when the vocabulary decided (see
        /// [`TextFilterConfig::min_known_word_ratio`]).
        language_score: f32,
    },
    /// No text survived; the fields describe why the first (preferred) one failed.
    Dropped {
        /// Stable code, one of [`DROP_REASONS`].
        reason: &'static str,
        /// What failed, for people: the text's source, the measured value and the limit.
        message: String,
        /// The language, when the check got as far as identifying it.
        language: Option<String>,
        /// Its confidence, with `language`.
        language_score: Option<f32>,
    },
}

impl TextVerdict {
    fn dropped(reason: &'static str, message: String) -> Self {
        Self::Dropped {
            reason,
            message,
            language: None,
            language_score: None,
        }
    }
}

/// The caption filter, built once per run and shared by every task (it is `Send + Sync`).
#[derive(Debug)]
pub struct TextFilter {
    config: TextFilterConfig,
    vocab: Arc<WordPiece>,
    /// The kept languages.
    keep: Vec<Lang>,
    /// [`TextFilterConfig::vocabulary_language`], when it is kept.
    vocabulary_language: Option<Lang>,
    /// Multi-word boilerplate phrases, matched anywhere.
    boilerplate_anywhere: Option<Regex>,
    /// Every boilerplate phrase, normalized: matched against whole segments.
    boilerplate_segments: HashSet<String>,
    /// Spam terms, matched anywhere.
    spam: Option<Regex>,
}

/// URLs, e-mail addresses, file names, machine-made names and numbering: removed from every text.
static JUNK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        # e-mail addresses
        [\w.%+-]+@[\w-]+(?:\.[\w-]+)+
        # URLs with a scheme or www.
        | \b(?:https?|ftp)://\S*
        | \bwww\.\S+
        # bare domain names, with a path if any
        | \b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|edu|gov|info|biz|io|co|uk|de|fr|ru|jp|cn|au|ca|nl|br)\b(?:/\S*)?
        # file names with an image, document, video or page extension
        | [\w~+-][\w.~+-]*\.(?:jpe?g|jfif|png|gif|webp|bmp|tiff?|svg|heic|heif|avif|ico|raw|cr2|nef|dng|psd|pdf|mp4|mov|avi|html?|php|aspx?|jsp)\b
        # camera and phone file stems: IMG_1234, DSC0001, DSCN1234, PXL_2021..., P1010123
        | \b(?:img|dsc[nf]?|dcim|pict|pxl|gopr|mvimg|cimg|sam|wp|vid)[_-]?\d{3,}[\w-]*
        | \bp\d{7}\b
        # any token with an underscore: machine-made, never prose
        | [\w-]*_[\w-]*
        # numbering: No. 12, #3, 3 of 10
        | \b(?:no|nr|num)\.\s*\d+
        | \#\s*\d+
        | \b\d+\s+of\s+\d+\b
        ",
    )
    .expect("the JUNK pattern is a valid regex")
});

/// A regex matching any of `phrases` on whole words, case-insensitively, words separated by any
/// run of non-word characters; `None` for no phrases.
fn phrase_regex<'a>(phrases: impl Iterator<Item = &'a String>) -> Result<Option<Regex>> {
    let mut words: Vec<Vec<String>> = phrases
        .map(|p| {
            p.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| regex::escape(&w.to_lowercase()))
                .collect()
        })
        .collect();
    if words.is_empty() {
        return Ok(None);
    }
    // Longer phrases first: the regex takes the first alternative that matches.
    words.sort_by_key(|w| std::cmp::Reverse(w.iter().map(String::len).sum::<usize>() + w.len()));
    let alternatives: Vec<String> = words.iter().map(|w| w.join(r"[\W_]+")).collect();
    Ok(Some(Regex::new(&format!(
        r"(?i)\b(?:{})\b",
        alternatives.join("|")
    ))?))
}

impl TextFilter {
    /// Checks `config` and compiles its phrase lists; `vocab` is the trainer's WordPiece
    /// vocabulary.
    pub fn new(config: TextFilterConfig, vocab: Arc<WordPiece>) -> Result<Self> {
        config.validate()?;
        let keep: Vec<Lang> = config.languages.iter().filter_map(|c| lang_of(c)).collect();
        let vocabulary_language =
            lang_of(&config.vocabulary_language).filter(|lang| keep.contains(lang));
        let boilerplate_anywhere = phrase_regex(
            config
                .boilerplate_phrases
                .iter()
                .filter(|p| normalize(p).contains(' ')),
        )?;
        let boilerplate_segments = config
            .boilerplate_phrases
            .iter()
            .map(|p| normalize(p))
            .collect();
        let spam = phrase_regex(config.spam_terms.iter())?;
        LazyLock::force(&JUNK);
        Ok(Self {
            config,
            vocab,
            keep,
            vocabulary_language,
            boilerplate_anywhere,
            boilerplate_segments,
            spam,
        })
    }

    /// Tries `options` (text and where it came from, preferred first, as
    /// [`crate::sources::Candidate::text_options`] lists them) in order and keeps the first that
    /// passes [`Self::check`]; if none does, the verdict of the first.
    pub fn choose(&self, options: &[(&str, TextSource)]) -> TextVerdict {
        let mut first = None;
        for &(text, source) in options {
            let verdict = self.check(text, source);
            if matches!(verdict, TextVerdict::Kept { .. }) {
                return verdict;
            }
            first.get_or_insert(verdict);
        }
        first.unwrap_or_else(|| {
            TextVerdict::dropped(
                "no_text",
                "no caption, alt, title or surrounding text".to_owned(),
            )
        })
    }

    /// Cleans `text` from `source` and applies every rule to it (see the module documentation).
    pub fn check(&self, text: &str, source: TextSource) -> TextVerdict {
        let config = &self.config;
        let source_name = source.as_str();
        let Some(collapsed) = clean_text(text) else {
            return TextVerdict::dropped("no_text", format!("{source_name}: empty"));
        };
        let cleaned = self.clean_counting(&collapsed);
        let quoted = Quoted(&collapsed);
        if cleaned.spam > config.max_spam_terms {
            return TextVerdict::dropped(
                "spam",
                format!(
                    "{source_name} {quoted}: {} spam terms (text.max_spam_terms = {})",
                    cleaned.spam, config.max_spam_terms
                ),
            );
        }
        // Why a text with too little left is dropped: what was removed, if anything.
        let removed_reason = if cleaned.spam > 0 {
            "spam"
        } else if cleaned.boilerplate > 0 {
            "boilerplate"
        } else {
            "no_text"
        };
        if !cleaned.text.chars().any(char::is_alphabetic) {
            return TextVerdict::dropped(
                removed_reason,
                format!("{source_name} {quoted}: no words left after cleaning"),
            );
        }
        let caption = first_sentences(&cleaned.text, config.max_sentences, config.max_words);
        let words = count_words(caption);
        let chars = caption.chars().count();
        if words > config.max_words || chars > config.max_chars {
            return TextVerdict::dropped(
                "too_long",
                format!(
                    "{source_name} {quoted}: {words} words, {chars} characters \
                     (text.max_words = {}, text.max_chars = {})",
                    config.max_words, config.max_chars
                ),
            );
        }
        if words < config.min_words || chars < config.min_chars {
            let reason = match removed_reason {
                "no_text" => "too_short",
                other => other,
            };
            return TextVerdict::dropped(
                reason,
                format!(
                    "{source_name} {quoted}: {words} words, {chars} characters left \
                     (text.min_words = {}, text.min_chars = {})",
                    config.min_words, config.min_chars
                ),
            );
        }
        let counts = self.vocab_counts(caption);
        let (language, language_score) = match self.language(caption, &counts) {
            Ok(found) => found,
            Err(drop) => {
                return TextVerdict::Dropped {
                    reason: "language",
                    message: format!("{source_name} {quoted}: {}", drop.why),
                    language: drop.found.map(|(code, _)| code.to_owned()),
                    language_score: drop.found.map(|(_, score)| score),
                };
            }
        };
        let oov_ratio = counts.oov as f32 / counts.words.max(1) as f32;
        if oov_ratio > config.max_oov_ratio {
            return TextVerdict::Dropped {
                reason: "oov",
                message: format!(
                    "{source_name} {quoted}: {} of {} words out of vocabulary \
                     ({oov_ratio:.2} > text.max_oov_ratio = {})",
                    counts.oov, counts.words, config.max_oov_ratio
                ),
                language: Some(language.to_owned()),
                language_score: Some(language_score),
            };
        }
        TextVerdict::Kept {
            text: caption.to_owned(),
            source,
            language: language.to_owned(),
            language_score,
        }
    }

    /// The cleaned form of `text` (step 1 of the module documentation), before sentence
    /// selection; empty when nothing is left.
    pub fn clean(&self, text: &str) -> String {
        clean_text(text)
            .map(|t| self.clean_counting(&t).text)
            .unwrap_or_default()
    }

    /// Cleans whitespace-collapsed `text`, counting boilerplate and spam removals.
    fn clean_counting(&self, text: &str) -> Cleaned {
        let mut spam = 0;
        let mut boilerplate = 0;
        let text = JUNK.replace_all(text, " ");
        let text = match &self.spam {
            Some(re) => re
                .replace_all(&text, |_: &Captures<'_>| {
                    spam += 1;
                    " "
                })
                .into_owned(),
            None => text.into_owned(),
        };
        let text = match &self.boilerplate_anywhere {
            Some(re) => re
                .replace_all(&text, |_: &Captures<'_>| {
                    boilerplate += 1;
                    " "
                })
                .into_owned(),
            None => text,
        };
        let text = self.drop_boilerplate_segments(&text, &mut boilerplate);
        Cleaned {
            text: tidy(&text),
            boilerplate,
            spam,
        }
    }

    /// Splits `text` at separators and drops the segments that are empty or boilerplate, each
    /// kept segment keeping the separator after it (and the first, the one before it).
    fn drop_boilerplate_segments(&self, text: &str, hits: &mut usize) -> String {
        let segments = segments(text);
        let mut out = String::with_capacity(text.len());
        let mut previous_separator = 0..0;
        let mut first = true;
        for (segment, separator) in segments {
            let body = &text[segment.clone()];
            let keep = body.chars().any(char::is_alphanumeric) && {
                let normalized = normalize(body);
                let boilerplate = self.boilerplate_segments.contains(&normalized);
                if boilerplate {
                    *hits += 1;
                }
                !boilerplate
            };
            if keep {
                if first {
                    out.push_str(&text[previous_separator.clone()]);
                    first = false;
                }
                out.push_str(body);
                out.push_str(&text[separator.clone()]);
            }
            previous_separator = separator;
        }
        out
    }

    /// Words with a letter, and how many of them are out of vocabulary or whole tokens.
    fn vocab_counts(&self, caption: &str) -> VocabCounts {
        let unk = self.vocab.special().unk;
        let mut counts = VocabCounts::default();
        for word in basic_tokenize(caption) {
            if !word.chars().any(char::is_alphabetic) {
                continue;
            }
            counts.words += 1;
            let pieces = self.vocab.tokenize(&word);
            if pieces.contains(&unk) || pieces.len() > self.config.max_pieces_per_word {
                counts.oov += 1;
            } else if pieces.len() == 1 {
                counts.whole += 1;
            }
        }
        counts
    }

    /// The caption's language and its score if it is kept; else what was found and why not.
    fn language(
        &self,
        caption: &str,
        counts: &VocabCounts,
    ) -> std::result::Result<(&'static str, f32), LanguageDrop> {
        let Some(info) = whatlang::detect(caption) else {
            return Err(LanguageDrop {
                found: None,
                why: "no language identified".to_owned(),
            });
        };
        let (lang, confidence) = (info.lang(), info.confidence() as f32);
        let code = iso639_1(lang);
        if self.keep.is_empty() || self.keep.contains(&lang) {
            return Ok((code, confidence));
        }
        let config = &self.config;
        let mut why = format!(
            "language {code} ({confidence:.2}), not in text.languages {:?}",
            config.languages
        );
        if confidence < config.min_language_confidence {
            let known = counts.whole as f32 / counts.words.max(1) as f32;
            if let Some(vocabulary) = self.vocabulary_language {
                if known >= config.min_known_word_ratio {
                    return Ok((iso639_1(vocabulary), known));
                }
                let _ = write!(
                    why,
                    "; uncertain (< text.min_language_confidence = {}) but only {known:.2} of \
                     words whole vocabulary tokens (< text.min_known_word_ratio = {})",
                    config.min_language_confidence, config.min_known_word_ratio
                );
            }
        }
        Err(LanguageDrop {
            found: Some((code, confidence)),
            why,
        })
    }
}

/// A text after cleaning.
struct Cleaned {
    text: String,
    /// Boilerplate phrases removed.
    boilerplate: usize,
    /// Spam terms removed.
    spam: usize,
}

/// Why a caption's language is not kept.
struct LanguageDrop {
    /// The language whatlang found and its confidence.
    found: Option<(&'static str, f32)>,
    /// For the message.
    why: String,
}

/// Word counts of a caption against the vocabulary.
#[derive(Default)]
struct VocabCounts {
    /// Words (from `basic_tokenize`) with a letter.
    words: usize,
    /// Of those, `[UNK]` or split into more than `max_pieces_per_word` pieces.
    oov: usize,
    /// Of those, one vocabulary token.
    whole: usize,
}

/// A text quoted for a message, cut to 60 characters.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(60) {
            Some((end, _)) => write!(f, "{:?}...", &self.0[..end]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// Lower-cased words of letters and digits, joined by one space, words of digits only left out:
/// "Photo 12:" → "photo", "Click-to-Enlarge" → "click to enlarge".
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().any(char::is_alphabetic))
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Separators that split segments wherever they stand.
const ALWAYS_SEPARATES: &str = "|•·;()[]{}<>\"“”„«»!?–—―…¦*~=^";

/// Whether `c` splits segments: a punctuation mark or symbol, unless it stands between two
/// letters or digits ("well-known", "3.5", "don't", "AT&T") and is not one of
/// [`ALWAYS_SEPARATES`].
fn separates(c: char, previous: Option<char>, next: Option<char>) -> bool {
    if c.is_alphanumeric() || c.is_whitespace() {
        return false;
    }
    ALWAYS_SEPARATES.contains(c)
        || !(previous.is_some_and(char::is_alphanumeric) && next.is_some_and(char::is_alphanumeric))
}

/// `text` as segments and the separator run after each (empty after the last), as byte ranges;
/// whitespace belongs to segments, so segments and separators tile the text.
fn segments(text: &str) -> Vec<(Range<usize>, Range<usize>)> {
    let mut out = Vec::new();
    let mut segment_start = 0;
    let mut separator_start = None;
    let mut previous = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let is_separator = separates(c, previous, next);
        match (is_separator, separator_start) {
            (true, None) => separator_start = Some(i),
            (false, Some(start)) => {
                out.push((segment_start..start, start..i));
                segment_start = i;
                separator_start = None;
            }
            _ => {}
        }
        previous = Some(c);
    }
    let end = text.len();
    match separator_start {
        Some(start) => out.push((segment_start..start, start..end)),
        None => out.push((segment_start..end, end..end)),
    }
    out
}

/// The opening bracket of closing bracket `c`.
fn opener_of(c: char) -> Option<char> {
    match c {
        ')' => Some('('),
        ']' => Some('['),
        '}' => Some('{'),
        _ => None,
    }
}

/// Marks that take no space before them.
const NO_SPACE_BEFORE: &str = ".,!?;:)]}…%";
/// Marks a caption may start with.
const MAY_START: &str = "([{\"'“‘«¿¡#$€£";
/// Marks a caption may end with.
const MAY_END: &str = ".!?)]}\"'”’»…%";

/// Tidies punctuation left after removals: unmatched brackets dropped, runs of one mark
/// collapsed ("!!!" → "!"), no space before closing marks, whitespace collapsed, and marks that
/// can't start or end a caption trimmed from its ends.
fn tidy(text: &str) -> String {
    let mut open: Vec<(usize, char)> = Vec::new();
    let mut unmatched: Vec<usize> = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => open.push((i, c)),
            ')' | ']' | '}' => {
                if open.last().map(|&(_, o)| o) == opener_of(c) {
                    open.pop();
                } else {
                    unmatched.push(i);
                }
            }
            _ => {}
        }
    }
    unmatched.extend(open.iter().map(|&(i, _)| i));
    unmatched.sort_unstable();

    let mut out = String::with_capacity(text.len());
    let mut skip = unmatched.into_iter().peekable();
    for (i, c) in text.char_indices() {
        if skip.peek() == Some(&i) {
            skip.next();
            continue;
        }
        if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            continue;
        }
        if !c.is_alphanumeric() {
            if NO_SPACE_BEFORE.contains(c) && out.ends_with(' ') {
                out.pop();
            }
            if out.ends_with(c) {
                continue;
            }
            // An empty pair of brackets goes, with the space before it.
            if let Some(opener) = opener_of(c)
                && out.ends_with(opener)
            {
                out.pop();
                if out.ends_with(' ') {
                    out.pop();
                }
                continue;
            }
        }
        out.push(c);
    }
    let is_mark = |c: char| !c.is_alphanumeric();
    let start = out
        .find(|c: char| !(c.is_whitespace() || is_mark(c) && !MAY_START.contains(c)))
        .unwrap_or(out.len());
    let end = out
        .rfind(|c: char| !(c.is_whitespace() || is_mark(c) && !MAY_END.contains(c)))
        .map_or(start, |i| {
            i + out[i..].chars().next().map_or(0, char::len_utf8)
        });
    if start == 0 && end == out.len() {
        out
    } else {
        out[start..end.max(start)].to_owned()
    }
}

/// Abbreviations whose final period does not end a sentence (lower case, without the period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "vs", "etc", "inc", "ltd", "co",
    "corp", "no", "nr", "fig", "figs", "approx", "ca", "dept", "est", "gen", "gov", "lt", "col",
    "capt", "sgt", "rev", "hon", "ave", "blvd", "rd", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec", "vol", "pp", "ed", "eds", "al",
];

/// The first `max_sentences` sentences of `text` that together have at most `max_words` words
/// (always at least the first sentence). A sentence ends at `.`, `!` or `?` (and closing quotes
/// or brackets) followed by a space and an upper-case letter or a digit; a period after an
/// abbreviation, an initial or a word with inner periods ("e.g.") does not end one.
fn first_sentences(text: &str, max_sentences: usize, max_words: usize) -> &str {
    let mut end = 0;
    let mut words = 0;
    let mut sentences = 0;
    let mut start = 0;
    while start < text.len() {
        let stop = sentence_end(text, start);
        let count = count_words(&text[start..stop]);
        if sentences > 0 && words + count > max_words {
            break;
        }
        words += count;
        sentences += 1;
        end = stop;
        if sentences == max_sentences {
            break;
        }
        start = stop;
    }
    text[..end].trim_end()
}

/// Where the sentence that starts at `start` ends: after its terminator run, or the text's end.
fn sentence_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b'.' | b'!' | b'?') {
            let mut j = i;
            while j < bytes.len() && matches!(bytes[j], b'.' | b'!' | b'?') {
                j += 1;
            }
            let run = &text[i..j];
            let after_closers = j + text[j..]
                .chars()
                .take_while(|c| "\"')]}”’»".contains(*c))
                .map(char::len_utf8)
                .sum::<usize>();
            let rest = &text[after_closers..];
            let starts_sentence = rest.starts_with(' ')
                && rest[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit());
            if starts_sentence && !(run == "." && is_abbreviation(&text[start..i])) {
                return after_closers;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    text.len()
}

/// Whether the word that ends `before` (the text up to a period) is an abbreviation, an initial
/// or a word with inner periods.
fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .trim_start_matches(|c: char| !c.is_alphanumeric());
    word.chars().count() == 1
        || word.contains('.')
        || ABBREVIATIONS
            .iter()
            .any(|abbreviation| word.eq_ignore_ascii_case(abbreviation))
}

/// Words of `text`: whitespace-separated tokens with a letter or digit, except that each CJK
/// ideograph or kana counts as a word (those scripts put no spaces between words; BERT splits
/// ideographs too).
fn count_words(text: &str) -> usize {
    text.split_whitespace()
        .map(|token| {
            let ideographs = token.chars().filter(|&c| is_cjk(c)).count();
            let other = token.chars().any(|c| c.is_alphanumeric() && !is_cjk(c));
            ideographs + usize::from(other)
        })
        .sum()
}

/// CJK ideographs and Japanese kana.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// The whatlang language of ISO 639-1 `code`.
fn lang_of(code: &str) -> Option<Lang> {
    Lang::all().iter().copied().find(|&l| iso639_1(l) == code)
}

/// ISO 639-1 code of a whatlang language (whatlang names them by ISO 639-3).
fn iso639_1(lang: Lang) -> &'static str {
    match lang {
        Lang::Afr => "af",
        Lang::Aka => "ak",
        Lang::Amh => "am",
        Lang::Ara => "ar",
        Lang::Aze => "az",
        Lang::Bel => "be",
        Lang::Ben => "bn",
        Lang::Bul => "bg",
        Lang::Cat => "ca",
        Lang::Ces => "cs",
        Lang::Cmn => "zh",
        Lang::Cym => "cy",
        Lang::Dan => "da",
        Lang::Deu => "de",
        Lang::Ell => "el",
        Lang::Eng => "en",
        Lang::Epo => "eo",
        Lang::Est => "et",
        Lang::Fin => "fi",
        Lang::Fra => "fr",
        Lang::Guj => "gu",
        Lang::Heb => "he",
        Lang::Hin => "hi",
        Lang::Hrv => "hr",
        Lang::Hun => "hu",
        Lang::Hye => "hy",
        Lang::Ind => "id",
        Lang::Ita => "it",
        Lang::Jav => "jv",
        Lang::Jpn => "ja",
        Lang::Kan => "kn",
        Lang::Kat => "ka",
        Lang::Khm => "km",
        Lang::Kor => "ko",
        Lang::Lat => "la",
        Lang::Lav => "lv",
        Lang::Lit => "lt",
        Lang::Mal => "ml",
        Lang::Mar => "mr",
        Lang::Mkd => "mk",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Nld => "nl",
        Lang::Nob => "nb",
        Lang::Ori => "or",
        Lang::Pan => "pa",
        Lang::Pes => "fa",
        Lang::Pol => "pl",
        Lang::Por => "pt",
        Lang::Ron => "ro",
        Lang::Rus => "ru",
        Lang::Sin => "si",
        Lang::Slk => "sk",
        Lang::Slv => "sl",
        Lang::Sna => "sn",
        Lang::Spa => "es",
        Lang::Srp => "sr",
        Lang::Swe => "sv",
        Lang::Tam => "ta",
        Lang::Tel => "te",
        Lang::Tgl => "tl",
        Lang::Tha => "th",
        Lang::Tuk => "tk",
        Lang::Tur => "tr",
        Lang::Ukr => "uk",
        Lang::Urd => "ur",
        Lang::Uzb => "uz",
        Lang::Vie => "vi",
        Lang::Yid => "yi",
        Lang::Zul => "zu",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whatlang_language_has_its_own_code() {
        let codes: HashSet<&str> = Lang::all().iter().map(|&l| iso639_1(l)).collect();
        assert_eq!(codes.len(), Lang::all().len());
        assert_eq!(lang_of("en"), Some(Lang::Eng));
        assert_eq!(lang_of("eng"), None);
    }

    #[test]
    fn segments_tile_the_text() {
        let text = "photo: (A dog) - on the well-known beach!";
        let parts = segments(text);
        let rebuilt: String = parts
            .iter()
            .map(|(s, p)| format!("{}{}", &text[s.clone()], &text[p.clone()]))
            .collect();
        assert_eq!(rebuilt, text);
        let bodies: Vec<&str> = parts.iter().map(|(s, _)| text[s.clone()].trim()).collect();
        assert_eq!(
            bodies,
            ["photo", "", "A dog", "", "on the well-known beach"]
        );
    }

    #[test]
    fn tidy_fixes_leftover_punctuation() {
        assert_eq!(tidy("Sunset (  ) - | "), "Sunset");
        assert_eq!(tidy("A [] dog ( )."), "A dog.");
        assert_eq!(tidy("- Sunset ( over the bay"), "Sunset over the bay");
        assert_eq!(tidy("Wow!!! A dog ,, here ."), "Wow! A dog, here.");
        assert_eq!(tidy("\"A dog (at night)\""), "\"A dog (at night)\"");
        assert_eq!(tidy(" | : "), "");
    }

    #[test]
    fn sentences_split_at_capitals_not_abbreviations() {
        let text = "Dr. Smith visits the U.S. Army base. It rains, e.g. Today. ok? Yes";
        assert_eq!(
            sentence_end(text, 0),
            "Dr. Smith visits the U.S. Army base.".len()
        );
        assert_eq!(
            first_sentences(text, 2, 100),
            "Dr. Smith visits the U.S. Army base. It rains, e.g. Today. ok?"
        );
        assert_eq!(
            first_sentences("One two. Three four five.", 2, 3),
            "One two."
        );
        assert_eq!(
            first_sentences("One two three four. Five.", 2, 3),
            "One two three four."
        );
    }
}
