//! The trainer's integration tests, one module per subject, in one test binary: each test binary
//! compiles its own copy of every generic Burn function it reaches (the model, autodiff, Adam),
//! so as ten binaries they compiled the same training code ten times (release build, 2 cores:
//! 1,317 s of CPU time; as one binary 464 s). Run one subject with its module path as the
//! filter, e.g. `cargo test --release -p imagebert-trainer --test integration -- minilm_parity::`.

mod checkpoint_resume;
mod common;
mod data_stream;
mod distributed;
mod doctor_and_bench_cli;
mod hf_loading;
mod minilm_parity;
mod pretraining_objectives;
mod retrieval;
mod retrieval_cli;
mod run_resume;
