//! `trainer`: the ImageBERT model and its training, fine-tuning and evaluation.
//!
//! Built so far: the WordPiece [`tokenizer`] and the BERT text encoder with HuggingFace weight
//! loading ([`model`]). `trainer run`, `finetune` and `eval` are listed as not built yet in the
//! README.

pub mod batch;
pub mod losses;
pub mod model;
pub mod objectives;
pub mod tokenizer;
