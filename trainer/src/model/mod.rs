//! The ImageBERT model, generic over the Burn backend (burn's `model.rs` convention).
//!
//! * [`config`]: sizes (`base`: the paper's 12×768 BERT-base; `mini`: MiniLM-L6's 6×384);
//! * [`bert`]: the BERT encoder and text embeddings, with HuggingFace weight loading in [`hf`].

pub mod bert;
pub mod config;
pub mod hf;
