//! One module per subcommand family.

pub mod audit;
pub mod bench;
pub mod bench_ckks;
pub mod bench_e2e;
pub mod bench_linalg;
pub mod bench_model;
pub mod client;
pub mod generation;
pub mod keys;
pub mod meter;
pub mod model;
pub mod openai;
pub mod public_context;
pub mod run;
pub mod serve;
pub mod threads;
