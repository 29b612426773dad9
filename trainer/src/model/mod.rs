//! The ImageBERT model, generic over the Burn backend (burn's `model.rs` convention).
//!
//! * [`config`]: sizes (`base`: the paper's 12×768 BERT-base; `mini`: MiniLM-L6's 6×384);
//! * [`bert`]: the BERT encoder and text embeddings, with HuggingFace weight loading in [`hf`];
//! * [`imagebert`]: image embeddings, the single-stream model and its MLM/MOC/MRFR/ITM heads.

pub mod bert;
pub mod config;
pub mod hf;
pub mod imagebert;
