//! `wordpiece`: BERT WordPiece tokenization, shared by `pipeline` (the out-of-vocabulary text filter)
//! and `trainer` (model input).
//!
//! BERT WordPiece tokenization from a `vocab.txt`, matching HuggingFace's `BertTokenizer`
//! (uncased: clean text, split CJK characters, lower-case, strip accents, split punctuation,
//! greedy longest-match WordPiece with `##` continuations, `[UNK]` for unknown or overlong words).
//!
//! Tested against the HuggingFace tokenizer's output on the real alt texts of the Common Crawl
//! fixtures (`trainer/tests/integration/minilm_parity.rs`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// Words longer than this many characters become `[UNK]` (HuggingFace's `max_input_chars_per_word`).
const MAX_CHARS_PER_WORD: usize = 100;

/// The special tokens BERT needs, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `[PAD]`
    pub pad: u32,
    /// `[UNK]`
    pub unk: u32,
    /// `[CLS]`
    pub cls: u32,
    /// `[SEP]`
    pub sep: u32,
    /// `[MASK]`
    pub mask: u32,
}

/// A WordPiece vocabulary and the uncased BERT pre-tokenizer.
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    tokens: Vec<String>,
    special: SpecialTokens,
}

impl WordPiece {
    /// Loads `vocab.txt` (one token per line, id = line number).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading vocabulary {}", path.display()))?;
        Self::from_vocab(text.lines().map(str::to_owned).collect())
            .with_context(|| format!("vocabulary {}", path.display()))
    }

    /// Builds from tokens in id order.
    pub fn from_vocab(tokens: Vec<String>) -> Result<Self> {
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let find = |name: &str| match ids.get(name) {
            Some(&id) => Ok(id),
            None => bail!("special token {name} is missing"),
        };
        let special = SpecialTokens {
            pad: find("[PAD]")?,
            unk: find("[UNK]")?,
            cls: find("[CLS]")?,
            sep: find("[SEP]")?,
            mask: find("[MASK]")?,
        };
        Ok(Self {
            ids,
            tokens,
            special,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The special token ids.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// The token string of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of `token`, if it is in the vocabulary.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Word-piece ids of `text`, without `[CLS]`/`[SEP]`.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for word in basic_tokenize(text) {
            self.word_pieces(&word, &mut out);
        }
        out
    }

    /// `[CLS] text [SEP]`, cut to at most `max_len` ids (the `[SEP]` is kept).
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids = Vec::with_capacity(max_len.min(64));
        ids.push(self.special.cls);
        ids.extend(self.tokenize(text));
        ids.truncate(max_len.saturating_sub(1).max(1));
        ids.push(self.special.sep);
        ids
    }

    /// Greedy longest-match-first split of one pre-token into vocabulary pieces.
    fn word_pieces(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_CHARS_PER_WORD {
            out.push(self.special.unk);
            return;
        }
        let start_len = out.len();
        let mut start = 0;
        let mut piece = String::with_capacity(word.len() + 2);
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.extend(&chars[start..end]);
                if let Some(&id) = self.ids.get(piece.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(start_len);
                    out.push(self.special.unk);
                    return;
                }
            }
        }
    }
}

/// Uncased BERT pre-tokenization: cleaned, CJK-split, lower-cased, accent-stripped words split
/// at punctuation.
pub fn basic_tokenize(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = c as u32;
        if code == 0 || code == 0xFFFD || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            spaced.push(' ');
        } else if is_cjk(code) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    let mut words = Vec::new();
    for token in spaced.split(' ').filter(|t| !t.is_empty()) {
        let lowered: String = token
            .to_lowercase()
            .nfd()
            .filter(|&c| get_general_category(c) != GeneralCategory::NonspacingMark)
            .collect();
        let mut current = String::new();
        for c in lowered.chars() {
            if is_punctuation(c) {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
                words.push(c.to_string());
            } else {
                current.push(c);
            }
        }
        if !current.is_empty() {
            words.push(current);
        }
    }
    words
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
        || get_general_category(c) == GeneralCategory::SpaceSeparator
}

fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        GeneralCategory::Control | GeneralCategory::Format
    )
}

fn is_punctuation(c: char) -> bool {
    let code = c as u32;
    if (33..=47).contains(&code)
        || (58..=64).contains(&code)
        || (91..=96).contains(&code)
        || (123..=126).contains(&code)
    {
        return true;
    }
    use GeneralCategory::*;
    matches!(
        get_general_category(c),
        ConnectorPunctuation
            | DashPunctuation
            | OpenPunctuation
            | ClosePunctuation
            | InitialPunctuation
            | FinalPunctuation
            | OtherPunctuation
    )
}

/// The CJK Unified Ideograph blocks BERT surrounds with spaces (not Japanese kana or Hangul).
fn is_cjk(code: u32) -> bool {
    matches!(code,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        let tokens = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "cafe", ",",
            "a", "!", "中",
        ];
        WordPiece::from_vocab(tokens.iter().map(|t| t.to_string()).collect()).unwrap()
    }

    #[test]
    fn basic_tokenizer_lowercases_strips_accents_and_splits_punctuation() {
        assert_eq!(
            basic_tokenize("Café,  DÉJÀ-vu!"),
            ["cafe", ",", "deja", "-", "vu", "!"]
        );
        assert_eq!(basic_tokenize("a\u{0}b\tc\u{200b}d"), ["ab", "cd"]);
        assert_eq!(basic_tokenize("中文x"), ["中", "文", "x"]);
    }

    #[test]
    fn word_pieces_take_the_longest_match_and_unknown_words_become_unk() {
        let v = vocab();
        assert_eq!(v.tokenize("unaffable"), [5, 6, 7]);
        assert_eq!(v.tokenize("unaffablex"), [1]);
        assert_eq!(v.tokenize("Café, a!"), [8, 9, 10, 11]);
        assert_eq!(v.tokenize(&"a".repeat(101)), [1]);
    }

    #[test]
    fn encode_adds_cls_and_sep_and_truncates_keeping_sep() {
        let v = vocab();
        assert_eq!(v.encode("a a a", 10), [2, 10, 10, 10, 3]);
        assert_eq!(v.encode("a a a", 3), [2, 10, 3]);
    }

    #[test]
    fn a_vocabulary_without_special_tokens_is_refused() {
        let err = WordPiece::from_vocab(vec!["[PAD]".into()]).unwrap_err();
        assert_eq!(err.to_string(), "special token [UNK] is missing");
    }
}
