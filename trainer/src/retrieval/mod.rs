//! Image–text retrieval, the paper's downstream task (§4.3): the Karpathy-split data joined with
//! region features ([`data`]), fine-tuning with the paper's three losses ([`finetune`]),
//! cross-encoder scoring of (image, caption) pairs ([`scoring`]), Recall@K ([`recall`]) and the
//! evaluation protocols with their report ([`eval`]).

pub mod data;
pub mod eval;
pub mod finetune;
pub mod recall;
pub mod scoring;
