//! `trainer`: the ImageBERT model and its training, fine-tuning and evaluation.
//!
//! Built so far (burn's layout: model, data, objectives, training):
//! [`model`] (BERT encoder with HuggingFace loading, ImageBERT and its four heads), [`objectives`]
//! (the paper's masking and ITM pairing), [`batch`] and [`losses`],
//! [`data`] (shards to samples, resumable order), [`checkpoint`] (exact-resume checkpoints),
//! [`config`] and [`training`] (the loop of `trainer run` and `trainer finetune`), and
//! [`distributed`] (ranks, rendezvous and all-reduce across processes and nodes),
//! [`retrieval`] (`trainer finetune` and `trainer eval`), [`bench`] (`trainer bench`),
//! [`scaling`] (`trainer bench-scaling`) and [`report`] (`trainer report`).
//! Tokenization is the `wordpiece` crate (shared with `pipeline`).

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod distributed;
pub mod losses;
pub mod model;
pub mod objectives;
pub mod report;
pub mod retrieval;
pub mod scaling;
pub mod training;
