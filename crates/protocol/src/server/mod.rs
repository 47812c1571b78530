//! The server's role: the weights prepared once for encrypted products, the state every
//! connection shares, and one state machine per connection that turns a request frame
//! into a reply frame, with one handler per message kind (`Hello`, `Product`,
//! `PublicPrefix`, `Release`) that receives the decoded value. Nothing here knows how
//! frames travel (see [`crate::transport`]).

mod backoff;
mod connection;
mod handlers;
mod hello;
mod prefetch;
mod prefix;
mod prepared;
mod products;
mod session;
mod session_server;
mod tail;
mod token;

pub use connection::{Connection, Reply};
pub use prefetch::{EarlyItem, EarlyWork, Prefetch, Prefetched, Streamed};
pub use prefix::PublicPrefix;
pub use prepared::{EncodedBytes, PreparedModel};
pub use products::ModelServer;
pub use session_server::{Counters, SessionEvent, SessionServer};
pub use tail::PlainTail;
pub use token::{check_token_strength, new_token, MIN_TOKEN_BYTES};
