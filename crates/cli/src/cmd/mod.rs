//! One module per subcommand family.

pub mod args;
pub mod audit;
pub mod bench;
pub mod client;
pub mod drive;
pub mod generation;
pub mod keys;
pub mod model;
pub mod openai;
pub mod public_context;
pub mod report;
pub mod run;
pub mod serve;
pub mod serving;
pub mod stream;
pub mod threads;
