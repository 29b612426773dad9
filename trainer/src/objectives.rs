//! The four pre-training tasks' input corruption and targets, exactly as ImageBERT §3.3 states
//! (facts in `../shared/docs/imagebert.md`), applied on the host before tensors are built:
//!
//! * MLM: 15% of text tokens; of those 80% become `[MASK]`, 10% a random token, 10% unchanged;
//! * MOC / MRFR: 15% of region tokens; of those the feature is zeroed 90% of the time, kept 10%;
//!   MOC's target is the detector's hard class label, MRFR's the original feature;
//! * ITM: a negative pairs an image with a random other caption, or a caption with a random
//!   other image; its masked losses are not computed (the paper's conditional mask), so negatives
//!   are not masked at all.
//!
//! Where the paper is silent we follow UNITER: at least one text token and one region are masked
//! in every positive sample (otherwise a short caption often contributes no MLM loss), and the
//! random replacement token is drawn uniformly from the whole vocabulary, as BERT does.

use rand::Rng;
use serde::{Deserialize, Serialize};

use wordpiece::SpecialTokens;

/// Label of positions that carry no loss.
pub const IGNORE: i64 = -1;

/// Masking and negative-sampling rates. Defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskingConfig {
    /// Share of text tokens chosen for MLM (0.15).
    pub mlm_probability: f64,
    /// Of chosen text tokens, share replaced by `[MASK]` (0.8).
    pub mlm_mask_share: f64,
    /// Of chosen text tokens, share replaced by a random token (0.1); the rest stay unchanged.
    pub mlm_random_share: f64,
    /// Share of region tokens chosen for MOC and MRFR (0.15).
    pub region_probability: f64,
    /// Of chosen regions, share whose feature is zeroed (0.9); the rest keep their feature.
    pub region_zero_share: f64,
    /// Share of samples turned into ITM negatives (0.5).
    pub itm_negative_probability: f64,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            mlm_probability: 0.15,
            mlm_mask_share: 0.8,
            mlm_random_share: 0.1,
            region_probability: 0.15,
            region_zero_share: 0.9,
            itm_negative_probability: 0.5,
        }
    }
}

impl MaskingConfig {
    /// Refuses rates outside [0, 1] or shares that add up to more than 1, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("mlm_probability", self.mlm_probability),
            ("mlm_mask_share", self.mlm_mask_share),
            ("mlm_random_share", self.mlm_random_share),
            ("region_probability", self.region_probability),
            ("region_zero_share", self.region_zero_share),
            ("itm_negative_probability", self.itm_negative_probability),
        ];
        for (key, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{key} must be within [0, 1], got {value}"));
            }
        }
        if self.mlm_mask_share + self.mlm_random_share > 1.0 {
            return Err("mlm_mask_share + mlm_random_share must not exceed 1".to_owned());
        }
        Ok(())
    }
}

/// Text after MLM corruption.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedText {
    /// Ids fed to the model.
    pub ids: Vec<u32>,
    /// Original id at chosen positions, [`IGNORE`] elsewhere.
    pub labels: Vec<i64>,
}

/// Chooses MLM positions among real tokens (not `[CLS]`, `[SEP]`, `[PAD]`) and corrupts them.
pub fn mask_text(
    ids: &[u32],
    special: SpecialTokens,
    vocab_size: usize,
    config: &MaskingConfig,
    rng: &mut impl Rng,
) -> MaskedText {
    let candidates: Vec<usize> = (0..ids.len())
        .filter(|&i| ![special.cls, special.sep, special.pad].contains(&ids[i]))
        .collect();
    let mut chosen: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|_| rng.random::<f64>() < config.mlm_probability)
        .collect();
    if chosen.is_empty() && !candidates.is_empty() && config.mlm_probability > 0.0 {
        chosen.push(candidates[rng.random_range(0..candidates.len())]);
    }
    let mut masked = ids.to_vec();
    let mut labels = vec![IGNORE; ids.len()];
    for i in chosen {
        labels[i] = i64::from(ids[i]);
        let r = rng.random::<f64>();
        if r < config.mlm_mask_share {
            masked[i] = special.mask;
        } else if r < config.mlm_mask_share + config.mlm_random_share {
            masked[i] = rng.random_range(0..vocab_size as u32);
        }
    }
    MaskedText {
        ids: masked,
        labels,
    }
}

/// Which regions carry MOC/MRFR loss and which have their feature zeroed.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedRegions {
    /// Chosen for MOC and MRFR (loss computed here).
    pub chosen: Vec<bool>,
    /// Feature replaced by zeros in the input (a subset of `chosen`).
    pub zeroed: Vec<bool>,
}

/// Chooses MOC/MRFR regions among `count` real regions.
pub fn mask_regions(count: usize, config: &MaskingConfig, rng: &mut impl Rng) -> MaskedRegions {
    let mut chosen: Vec<bool> = (0..count)
        .map(|_| rng.random::<f64>() < config.region_probability)
        .collect();
    if count > 0 && !chosen.contains(&true) && config.region_probability > 0.0 {
        chosen[rng.random_range(0..count)] = true;
    }
    let zeroed = chosen
        .iter()
        .map(|&c| c && rng.random::<f64>() < config.region_zero_share)
        .collect();
    MaskedRegions { chosen, zeroed }
}

/// How one batch row is assembled for ITM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItmPairing {
    /// Index (within the batch) of the sample whose caption is used.
    pub caption_of: usize,
    /// Index of the sample whose image is used.
    pub image_of: usize,
}

impl ItmPairing {
    /// Whether caption and image come from the same sample (a positive pair).
    pub fn is_match(&self) -> bool {
        self.caption_of == self.image_of
    }
}

/// Pairs each of `batch` samples for ITM: kept as is, or a negative with another sample's caption
/// (a random caption for the image) or another sample's image (a random image for the caption),
/// each kind half of the negatives. A batch of one has no other sample and stays positive.
pub fn pair_for_itm(batch: usize, config: &MaskingConfig, rng: &mut impl Rng) -> Vec<ItmPairing> {
    (0..batch)
        .map(|i| {
            if batch < 2 || rng.random::<f64>() >= config.itm_negative_probability {
                return ItmPairing {
                    caption_of: i,
                    image_of: i,
                };
            }
            let other = (i + rng.random_range(1..batch)) % batch;
            if rng.random::<bool>() {
                ItmPairing {
                    caption_of: other,
                    image_of: i,
                }
            } else {
                ItmPairing {
                    caption_of: i,
                    image_of: other,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const SPECIAL: SpecialTokens = SpecialTokens {
        pad: 0,
        unk: 100,
        cls: 101,
        sep: 102,
        mask: 103,
    };

    fn close(value: f64, expected: f64, tolerance: f64, what: &str) {
        assert!(
            (value - expected).abs() < tolerance,
            "{what}: {value} vs {expected}"
        );
    }

    #[test]
    fn mlm_masks_15_percent_of_real_tokens_with_80_10_10_replacement() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let config = MaskingConfig::default();
        let (mut real, mut chosen, mut to_mask, mut unchanged) = (0usize, 0usize, 0usize, 0usize);
        for _ in 0..4000 {
            // [CLS] 40 words [SEP] [PAD] [PAD]
            let mut ids = vec![SPECIAL.cls];
            ids.extend((0..40).map(|i| 1000 + i));
            ids.extend([SPECIAL.sep, SPECIAL.pad, SPECIAL.pad]);
            let out = mask_text(&ids, SPECIAL, 30_522, &config, &mut rng);
            real += 40;
            for (i, &label) in out.labels.iter().enumerate() {
                if label == IGNORE {
                    assert_eq!(out.ids[i], ids[i], "an unchosen token changed");
                    continue;
                }
                assert!((1..=40).contains(&i), "special token at {i} was chosen");
                assert_eq!(label, i64::from(ids[i]));
                chosen += 1;
                to_mask += usize::from(out.ids[i] == SPECIAL.mask);
                unchanged += usize::from(out.ids[i] == ids[i]);
            }
        }
        let chosen_f = chosen as f64;
        close(chosen_f / real as f64, 0.15, 0.005, "chosen share");
        close(to_mask as f64 / chosen_f, 0.8, 0.01, "[MASK] share");
        close(unchanged as f64 / chosen_f, 0.1, 0.01, "unchanged share");
        close(
            (chosen - to_mask - unchanged) as f64 / chosen_f,
            0.1,
            0.01,
            "random share",
        );
    }

    #[test]
    fn every_caption_gets_at_least_one_mlm_target_and_specials_alone_get_none() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let config = MaskingConfig::default();
        for _ in 0..500 {
            let out = mask_text(&[101, 2000, 102], SPECIAL, 30_522, &config, &mut rng);
            assert_eq!(out.labels, [IGNORE, 2000, IGNORE]);
        }
        let out = mask_text(&[101, 102, 0], SPECIAL, 30_522, &config, &mut rng);
        assert!(out.labels.iter().all(|&l| l == IGNORE));
    }

    #[test]
    fn regions_are_chosen_15_percent_and_zeroed_90_percent_of_those() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let config = MaskingConfig::default();
        let (mut chosen, mut zeroed, mut total) = (0usize, 0usize, 0usize);
        for _ in 0..3000 {
            let out = mask_regions(100, &config, &mut rng);
            total += 100;
            for (c, z) in out.chosen.iter().zip(&out.zeroed) {
                assert!(!z || *c, "a region was zeroed without being chosen");
                chosen += usize::from(*c);
                zeroed += usize::from(*z);
            }
        }
        close(chosen as f64 / total as f64, 0.15, 0.005, "chosen share");
        close(zeroed as f64 / chosen as f64, 0.9, 0.01, "zeroed share");
    }

    #[test]
    fn itm_makes_half_negatives_split_between_swapped_captions_and_swapped_images() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let config = MaskingConfig::default();
        let (mut negatives, mut swapped_captions, mut rows) = (0usize, 0usize, 0usize);
        for _ in 0..2000 {
            for (i, p) in pair_for_itm(16, &config, &mut rng).into_iter().enumerate() {
                rows += 1;
                assert!(
                    p.caption_of == i || p.image_of == i,
                    "row {i} lost both its parts"
                );
                if !p.is_match() {
                    negatives += 1;
                    swapped_captions += usize::from(p.image_of == i);
                }
            }
        }
        close(negatives as f64 / rows as f64, 0.5, 0.01, "negative share");
        close(
            swapped_captions as f64 / negatives as f64,
            0.5,
            0.02,
            "random-caption share",
        );
        let single = pair_for_itm(1, &config, &mut rng);
        assert!(single[0].is_match());
    }

    #[test]
    fn invalid_rates_are_refused_naming_the_key() {
        let config = MaskingConfig {
            region_zero_share: 1.5,
            ..MaskingConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err(),
            "region_zero_share must be within [0, 1], got 1.5"
        );
    }
}
