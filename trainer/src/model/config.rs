//! Model sizes. The paper's encoder is BERT-base: 12 layers, hidden 768, FFN 3072, 12 heads,
//! dropout 0.1, GELU, max 144 positions (ImageBERT §3, §4.1; `../shared/docs/imagebert.md`).

use serde::{Deserialize, Serialize};

/// Shape of the transformer encoder and its text embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// WordPiece vocabulary size (30,522 for uncased BERT).
    pub vocab_size: usize,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table (512 in BERT checkpoints).
    pub max_position_embeddings: usize,
    /// Rows of the segment (token-type) table: 2 (text, image).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12 in BERT).
    pub layer_norm_eps: f64,
    /// Dropout on embeddings, attention probabilities and sub-layer outputs (0.1 in the paper).
    pub dropout: f64,
}

impl EncoderConfig {
    /// BERT-base, the paper's encoder: 12 layers × 768, 12 heads, FFN 3072.
    pub fn base() -> Self {
        Self {
            vocab_size: 30_522,
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            dropout: 0.1,
        }
    }

    /// MiniLM-L6 (all-MiniLM-L6-v2's shape): 6 layers × 384, 12 heads, FFN 1536. The embedded
    /// default and the tests use it.
    pub fn mini() -> Self {
        Self {
            hidden_size: 384,
            num_layers: 6,
            intermediate_size: 1536,
            ..Self::base()
        }
    }

    /// A preset by name: `base` or `mini`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "base" => Some(Self::base()),
            "mini" => Some(Self::mini()),
            _ => None,
        }
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Refuses shapes the encoder cannot be built with, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(format!(
                "num_heads ({}) must divide hidden_size ({})",
                self.num_heads, self.hidden_size
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_papers_and_minilms_shapes() {
        let base = EncoderConfig::preset("base").unwrap();
        assert_eq!(
            (base.num_layers, base.hidden_size, base.intermediate_size),
            (12, 768, 3072)
        );
        assert_eq!(base.head_size(), 64);
        let mini = EncoderConfig::preset("mini").unwrap();
        assert_eq!(
            (mini.num_layers, mini.hidden_size, mini.num_heads),
            (6, 384, 12)
        );
        assert_eq!(mini.head_size(), 32);
        assert!(EncoderConfig::preset("huge").is_none());
    }

    #[test]
    fn invalid_shapes_are_refused_naming_the_field() {
        let mut c = EncoderConfig::mini();
        c.num_heads = 5;
        assert_eq!(
            c.validate().unwrap_err(),
            "num_heads (5) must divide hidden_size (384)"
        );
        c = EncoderConfig::mini();
        c.num_layers = 0;
        assert_eq!(c.validate().unwrap_err(), "num_layers must be positive");
    }
}
