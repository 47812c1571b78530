//! The crate's private parsers, exposed to the fuzz targets (`fuzz/`, built with
//! `--cfg fuzzing`) and to nothing else: this module does not exist in a normal build,
//! so none of it is API. Each function is the parser a file on disk goes through, up to
//! (not including) the cryptography that needs the root key.

use crate::error::Result;
use crate::log::{LogEntry, LogSummary, SignedHead};

pub use crate::keystore::KeystoreFile;

/// `keystore.bin`'s parser (what `Keystore::open` and `Keystore::peek` run on the file
/// before the root unwraps anything), and the file encoded back from what it read.
///
/// # Errors
/// As `Keystore::open` for a damaged file: truncated, invalid or trailing fields.
pub fn keystore_file(bytes: &[u8]) -> Result<KeystoreFile> {
    crate::keystore::reparse(bytes)
}

/// The release log's parser and chain check (`log::verify` on the file's bytes).
///
/// # Errors
/// `Error::LogBroken` at the first bad line.
pub fn release_log(text: &[u8], keystore_id: &[u8; 16]) -> Result<LogSummary> {
    crate::log::verify_text(text, keystore_id)
}

/// One release-log line (without its newline) as an entry, if it is one.
pub fn log_line(line: &[u8]) -> Option<LogEntry> {
    crate::log::parse_line(line).ok()
}

/// An entry as the log writes it (without the newline).
pub fn encode_log_line(e: &LogEntry) -> Option<Vec<u8>> {
    crate::log::encode_line(e).ok()
}

/// The signed head file (`releases.head`): line count, last hash, MAC.
pub fn log_head(text: &str) -> Option<(u64, [u8; 32], [u8; 32])> {
    SignedHead::parse(text).map(|h| (h.lines, h.head, h.mac))
}

/// The head file's text for these values (what `log::write_head` writes).
pub fn log_head_text(lines: u64, head: [u8; 32], mac: [u8; 32]) -> String {
    SignedHead { lines, head, mac }.to_text()
}
