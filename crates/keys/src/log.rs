//! The release log: one JSON line per authorized release, each carrying the SHA-256 of
//! the line before it (the first line carries a hash bound to the keystore id), so an
//! edited, removed or reordered line breaks the chain at the next one. The head (line
//! count and last hash) is also kept in `releases.head` with an HMAC under a key derived
//! from the keystore key, which catches an edit of the last line or a cut-off tail, as
//! long as the verifier holds the keystore key.
//!
//! # Security
//! Anyone who can write the log and holds no keystore key can rewrite the whole chain
//! consistently; only the MAC'd head catches that, and only when the keystore is opened
//! for verification (`selene keys audit-log --verify` does). Deleting both files resets
//! the per-key counts: the log is evidence, not a vault.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{io, Error, Result};
use crate::release::Tensor;
use crate::secret::KeyBytes;

/// The log's file name in a keystore directory.
pub const LOG_FILE: &str = "releases.log";
/// The MAC'd head's file name.
pub const HEAD_FILE: &str = "releases.head";

/// One authorized release, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// 1-based sequence number.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Session key id (hex).
    pub key: String,
    /// The release is the output of layers `0..after_layer`.
    pub after_layer: usize,
    /// Which tensor.
    pub tensor: Tensor,
    /// Rows released.
    pub rows: u64,
    /// Flooding sigma applied.
    pub flood_sigma: f64,
    /// SHA-256 of the release's wire bytes (hex).
    pub digest: String,
    /// SHA-256 of the previous line (hex).
    pub prev: String,
}

/// What a verified log holds.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSummary {
    /// Lines (releases).
    pub lines: u64,
    /// SHA-256 of the last line, or the genesis hash for an empty log.
    pub head: [u8; 32],
    /// Rows released per session key id (hex).
    pub rows_per_key: BTreeMap<String, u64>,
}

/// The `prev` of the first line: binds the log to its keystore.
pub fn genesis(keystore_id: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"selene release log v1");
    h.update(keystore_id);
    h.finalize().into()
}

/// Reads and verifies the log at `path` (a missing file is an empty log).
///
/// # Errors
/// [`Error::LogBroken`] at the first bad line; I/O errors.
pub fn verify(path: &Path, keystore_id: &[u8; 16]) -> Result<LogSummary> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(path)(e)),
    };
    verify_text(&text, keystore_id)
}

/// [`verify`] on the log's bytes (the parser proper, pure: fuzzed as `keystore`).
pub(crate) fn verify_text(text: &[u8], keystore_id: &[u8; 16]) -> Result<LogSummary> {
    let mut summary = LogSummary {
        lines: 0,
        head: genesis(keystore_id),
        rows_per_key: BTreeMap::new(),
    };
    if text.is_empty() {
        return Ok(summary);
    }
    let Some(body) = text.strip_suffix(b"\n") else {
        return Err(Error::LogBroken {
            line: text.split(|&b| b == b'\n').count(),
            why: "the last line is cut off (no newline)".to_string(),
        });
    };
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let broken = |why: String| Error::LogBroken { line: n, why };
        let e = parse_line(line).map_err(|e| broken(format!("not a release entry ({e})")))?;
        if e.prev != hex::encode(summary.head) {
            return Err(broken(if n == 1 {
                "its previous-hash is not this keystore's genesis hash (log from another \
                 keystore, or lines removed from the start)"
                    .to_string()
            } else {
                format!(
                    "its previous-hash does not match line {}: line {} was edited, removed or \
                     reordered",
                    n - 1,
                    n - 1
                )
            }));
        }
        if e.seq != n as u64 {
            return Err(broken(format!(
                "sequence number {} where {n} was expected",
                e.seq
            )));
        }
        let total = summary.rows_per_key.entry(e.key.clone()).or_insert(0);
        *total = total.saturating_add(e.rows);
        summary.head = Sha256::digest(line).into();
        summary.lines = n as u64;
    }
    Ok(summary)
}

/// One log line (without its newline) as an entry.
pub(crate) fn parse_line(line: &[u8]) -> serde_json::Result<LogEntry> {
    serde_json::from_slice(line)
}

/// An entry as one log line (without its newline).
pub(crate) fn encode_line(e: &LogEntry) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(e)
}

/// An open log, appending after a verified head.
#[derive(Debug)]
pub struct ReleaseLog {
    path: PathBuf,
    lines: u64,
    head: [u8; 32],
}

impl ReleaseLog {
    /// Opens (and verifies) the log at `path`.
    ///
    /// # Errors
    /// As [`verify`].
    pub fn open(path: &Path, keystore_id: &[u8; 16]) -> Result<(Self, LogSummary)> {
        let s = verify(path, keystore_id)?;
        Ok((
            Self {
                path: path.to_path_buf(),
                lines: s.lines,
                head: s.head,
            },
            s,
        ))
    }

    /// Appends one release; `entry.seq` and `entry.prev` are filled in here. The line is
    /// on disk (fsync) when this returns.
    ///
    /// # Errors
    /// I/O errors.
    pub fn append(&mut self, mut entry: LogEntry) -> Result<(u64, [u8; 32])> {
        entry.seq = self.lines + 1;
        entry.prev = hex::encode(self.head);
        let line = encode_line(&entry)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        let mut buf = line.clone();
        buf.push(b'\n');
        f.write_all(&buf).map_err(io(&self.path))?;
        f.sync_data().map_err(io(&self.path))?;
        self.lines = entry.seq;
        self.head = Sha256::digest(&line).into();
        Ok((self.lines, self.head))
    }
}

fn head_mac(key: &KeyBytes, lines: u64, head: &[u8; 32]) -> [u8; 32] {
    let mut msg = b"selene log head".to_vec();
    msg.extend_from_slice(&lines.to_le_bytes());
    msg.extend_from_slice(head);
    crate::policy::tag(key, &msg)
}

/// The contents of the head file: `lines head-hex mac-hex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignedHead {
    /// Lines of the log.
    pub(crate) lines: u64,
    /// SHA-256 of its last line.
    pub(crate) head: [u8; 32],
    /// HMAC of both under the log-head key.
    pub(crate) mac: [u8; 32],
}

impl SignedHead {
    /// Parses the head file's text (whitespace-separated; nothing after the MAC is read).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace();
        let lines = parts.next()?.parse().ok()?;
        let head = hex::decode(parts.next()?).ok()?.try_into().ok()?;
        let mac = hex::decode(parts.next()?).ok()?.try_into().ok()?;
        Some(Self { lines, head, mac })
    }

    /// The head file's text.
    pub(crate) fn to_text(&self) -> String {
        format!(
            "{} {} {}\n",
            self.lines,
            hex::encode(self.head),
            hex::encode(self.mac)
        )
    }
}

/// Writes the MAC'd head next to the log (atomically).
///
/// # Errors
/// I/O errors.
pub fn write_head(dir: &Path, key: &KeyBytes, lines: u64, head: &[u8; 32]) -> Result<()> {
    let text = SignedHead {
        lines,
        head: *head,
        mac: head_mac(key, lines, head),
    }
    .to_text();
    crate::private_file::write_private(&dir.join(HEAD_FILE), text.as_bytes())
}

/// Checks the log summary against the MAC'd head (a missing head matches only an empty
/// log).
///
/// # Errors
/// [`Error::LogHead`] naming the difference.
pub fn check_head(dir: &Path, key: &KeyBytes, s: &LogSummary) -> Result<()> {
    let path = dir.join(HEAD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if s.lines == 0 {
                return Ok(());
            }
            return Err(Error::LogHead {
                why: format!("the log has {} lines but no signed head", s.lines),
            });
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let Some(SignedHead { lines, head, mac }) = SignedHead::parse(&text) else {
        return Err(Error::LogHead {
            why: format!("{} does not parse", path.display()),
        });
    };
    // Constant time: the MAC is compared against an attacker-editable file.
    if !bool::from(head_mac(key, lines, &head).ct_eq(&mac)) {
        return Err(Error::LogHead {
            why: "the head's MAC does not verify (head file altered)".to_string(),
        });
    }
    if lines != s.lines || head != s.head {
        return Err(Error::LogHead {
            why: format!(
                "the signed head records {lines} lines ending in {}, the log has {} lines \
                 ending in {}: the tail was edited or cut off",
                &hex::encode(head)[..16],
                s.lines,
                &hex::encode(s.head)[..16]
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, rows: u64) -> LogEntry {
        LogEntry {
            seq: 0,
            time: 1,
            key: key.to_string(),
            after_layer: 4,
            tensor: Tensor::Residual,
            rows,
            flood_sigma: 0.5,
            digest: hex::encode([9; 32]),
            prev: String::new(),
        }
    }

    #[test]
    fn chain_verifies_and_every_edit_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let id = [1; 16];
        let (mut log, s) = ReleaseLog::open(&path, &id).unwrap();
        assert_eq!(s.lines, 0);
        for i in 0..5 {
            log.append(entry(if i % 2 == 0 { "aa" } else { "bb" }, i + 1))
                .unwrap();
        }
        let s = verify(&path, &id).unwrap();
        assert_eq!(s.lines, 5);
        assert_eq!(s.rows_per_key["aa"], 1 + 3 + 5);
        assert_eq!(s.rows_per_key["bb"], 2 + 4);
        let key = KeyBytes::random();
        write_head(dir.path(), &key, s.lines, &s.head).unwrap();
        check_head(dir.path(), &key, &s).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Edit line 2's rows: line 3 reports the break at line 2.
        let mut edited = lines.clone();
        let l2 = lines[1].replace("\"rows\":2", "\"rows\":0");
        edited[1] = &l2;
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        match verify(&path, &id) {
            Err(Error::LogBroken { line: 3, why }) => assert!(why.contains("line 2"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Remove line 3.
        let mut removed = lines.clone();
        removed.remove(2);
        std::fs::write(&path, removed.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path, &id),
            Err(Error::LogBroken { line: 3, .. })
        ));
        // Edit the last line: the chain cannot see it, the signed head does.
        let mut last = lines.clone();
        let l5 = lines[4].replace("\"rows\":5", "\"rows\":1");
        last[4] = &l5;
        std::fs::write(&path, last.join("\n") + "\n").unwrap();
        let s2 = verify(&path, &id).unwrap();
        assert!(matches!(
            check_head(dir.path(), &key, &s2),
            Err(Error::LogHead { .. })
        ));
        // Cut off the tail.
        std::fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        let s3 = verify(&path, &id).unwrap();
        assert!(matches!(
            check_head(dir.path(), &key, &s3),
            Err(Error::LogHead { .. })
        ));
        // Another keystore's log.
        std::fs::write(&path, text.clone()).unwrap();
        assert!(matches!(
            verify(&path, &[2; 16]),
            Err(Error::LogBroken { line: 1, .. })
        ));
        // A half-written last line.
        std::fs::write(&path, &text[..text.len() - 3]).unwrap();
        assert!(matches!(
            verify(&path, &id),
            Err(Error::LogBroken { line: 5, .. })
        ));
        // A head under another key.
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            check_head(dir.path(), &KeyBytes::random(), &s),
            Err(Error::LogHead { .. })
        ));
    }
}
