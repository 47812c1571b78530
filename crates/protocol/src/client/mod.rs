//! The client's role: the session (`Hello`, numbered requests, `Close`), the encrypted
//! linear layers of strict mode, selective mode's flooded releases, length padding and
//! the token loop after a public prefix. Every file here talks to the server only
//! through a [`crate::Transport`]; none imports the server's code.

mod generator;
mod padding;
mod prefix;
mod selective;
mod session;
mod strict;

pub use generator::{model_fingerprint, PrivateGenerator, PrivateStats};
pub use padding::PaddedLinear;
pub use prefix::{generate_after_prefix, generate_after_prefix_drafted};
pub use selective::{generate_session, SelectiveClient, MIN_FLOODED_PRECISION_BITS};
pub use session::{ClientSession, Released, MAX_OUTSTANDING, PRODUCT_REPLY_FACTOR};
pub use strict::{Flooding, StrictLinear, TrafficStats, PIPELINE_ROWS, VERIFY_TOLERANCE};
