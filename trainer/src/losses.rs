//! The four pre-training losses (ImageBERT §3.3): MLM and MOC are cross-entropies over the chosen
//! positions, MRFR an L2 regression on the chosen regions, ITM a binary cross-entropy on the
//! `[CLS]` score. The masked heads see only the chosen tokens, and ITM negatives have none, so
//! negatives get none of the three masked losses; a placeholder labelled
//! [`IGNORE`](crate::objectives::IGNORE) (a batch with nothing chosen) carries no loss either.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::PretrainTargets;
use crate::model::imagebert::ImageBertOutput;

/// Weight of each loss in the total. The paper does not state them; 1 each is the usual choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// Masked language modelling.
    pub mlm: f64,
    /// Masked object classification.
    pub moc: f64,
    /// Masked region feature regression.
    pub mrfr: f64,
    /// Image–text matching.
    pub itm: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            mlm: 1.0,
            moc: 1.0,
            mrfr: 1.0,
            itm: 1.0,
        }
    }
}

/// Each loss (a one-element tensor) and their weighted sum.
#[derive(Debug, Clone)]
pub struct PretrainLosses<B: Backend> {
    /// MLM cross-entropy, mean over chosen tokens.
    pub mlm: Tensor<B, 1>,
    /// MOC cross-entropy, mean over chosen regions.
    pub moc: Tensor<B, 1>,
    /// MRFR squared error, mean over chosen regions and feature dimensions.
    pub mrfr: Tensor<B, 1>,
    /// ITM binary cross-entropy, mean over the batch.
    pub itm: Tensor<B, 1>,
    /// The weighted sum that is back-propagated.
    pub total: Tensor<B, 1>,
    /// Share of MLM targets predicted right (arg-max), for the log.
    pub mlm_accuracy: Tensor<B, 1>,
    /// Share of MOC targets predicted right (arg-max), for the log.
    pub moc_accuracy: Tensor<B, 1>,
    /// Share of pairs whose ITM logit has the label's sign, for the log.
    pub itm_accuracy: Tensor<B, 1>,
}

/// Share of the labels that are not ignored whose arg-max over `logits [n, classes]` is right
/// (0 when there are none).
pub fn masked_accuracy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let weights = labels.clone().greater_equal_elem(0).float();
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let hits = predicted.equal(labels).float() * weights.clone();
    hits.sum() / weights.sum().clamp_min(1.0)
}

/// Cross-entropy of `logits [n, classes]` against `labels [n]`, averaged over the labels that are
/// not ignored (0 when there are none).
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let weights = labels.clone().greater_equal_elem(0).float();
    let safe = labels.clamp_min(0).unsqueeze_dim::<2>(1);
    let picked = log_softmax(logits, 1).gather(1, safe).squeeze_dim::<1>(1);
    let count = weights.clone().sum().clamp_min(1.0);
    (picked * weights).sum().neg() / count
}

/// All four losses for one batch.
pub fn pretrain_losses<B: Backend>(
    output: ImageBertOutput<B>,
    targets: PretrainTargets<B>,
    weights: &LossWeights,
) -> PretrainLosses<B> {
    let mlm_accuracy = masked_accuracy(output.mlm_logits.clone(), targets.mlm_labels.clone());
    let moc_accuracy = masked_accuracy(output.moc_logits.clone(), targets.moc_labels.clone());
    let itm_accuracy = output
        .itm_logits
        .clone()
        .greater_elem(0.0)
        .float()
        .equal(targets.itm_labels.clone())
        .float()
        .mean();
    // MRFR is taken on the regions MOC is: every chosen region but a placeholder.
    let regions = targets.moc_labels.clone().greater_equal_elem(0).float();
    let mlm = masked_cross_entropy(output.mlm_logits, targets.mlm_labels);
    let moc = masked_cross_entropy(output.moc_logits, targets.moc_labels);

    let [_, dim] = output.mrfr_features.dims();
    let difference = output.mrfr_features - targets.mrfr_targets;
    let squared = (difference.clone() * difference)
        .sum_dim(1)
        .squeeze_dim::<1>(1);
    let chosen = regions.clone().sum().clamp_min(1.0);
    let mrfr = (squared * regions).sum() / (chosen * dim as f64);

    // BCE with logits: softplus(x) - y·x, written stably as max(x, 0) - y·x + ln(1 + e^-|x|).
    let x = output.itm_logits;
    let itm = (x.clone().clamp_min(0.0) - x.clone() * targets.itm_labels
        + (x.abs().neg().exp() + 1.0).log())
    .mean();

    let total = mlm.clone() * weights.mlm
        + moc.clone() * weights.moc
        + mrfr.clone() * weights.mrfr
        + itm.clone() * weights.itm;
    PretrainLosses {
        mlm,
        moc,
        mrfr,
        itm,
        total,
        mlm_accuracy,
        moc_accuracy,
        itm_accuracy,
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::objectives::IGNORE;

    type B = backend::Compute;

    #[test]
    fn accuracy_counts_only_labelled_positions() {
        let device = Default::default();
        // Four positions over three classes; arg-maxes: 2, 0, 1, 1.
        let logits = Tensor::<B, 2>::from_data(
            TensorData::new(
                vec![
                    0.1f32, 0.2, 0.9, 0.8, 0.1, 0.1, 0.0, 0.5, 0.4, 0.3, 0.6, 0.1,
                ],
                [4, 3],
            ),
            &device,
        );
        // Right, ignored, wrong, right: 2 of 3.
        let labels =
            Tensor::<B, 1, Int>::from_data(TensorData::new(vec![2, IGNORE, 0, 1], [4]), &device);
        let accuracy = masked_accuracy(logits.clone(), labels).into_scalar();
        assert!((accuracy - 2.0 / 3.0).abs() < 1e-6, "{accuracy}");
        let none = Tensor::<B, 1, Int>::full([4], IGNORE, &device);
        assert_eq!(masked_accuracy(logits, none).into_scalar(), 0.0);
    }
}
