//! Everything that crosses between client and server as bytes: the framed messages of
//! the session protocol ([`wire`]), and the two payloads they carry opaquely, a
//! selective release ([`release`]) and a public prefix's keys and values
//! ([`prefix_kv`]). Each decoder checks every length before it allocates and refuses
//! trailing bytes; both roles use the same functions.

pub(crate) mod blob;
pub mod keys;
pub mod prefix_kv;
pub mod release;
pub mod stage;
pub mod wire;
