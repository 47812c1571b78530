//! `selene serve` and `selene client` as separate processes over TLS on loopback.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test code")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server token as `selene serve --new-token` makes them (16 bytes, hex).
const TOKEN: &str = "6f1c9e0a4b7d2385e1f0c6a9b3d47e52";

#[test]
fn client_over_tls_matches_plaintext_and_a_wrong_token_is_refused() {
    let bin = env!("CARGO_BIN_EXE_selene");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--token-env",
            "SELENE_TEST_TOKEN",
        ])
        .env("SELENE_TEST_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start selene serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut fp) = (None, None);
    while addr.is_none() || fp.is_none() {
        let line = lines.next().expect("serve ended early").unwrap();
        if let Some(a) = line.strip_prefix("[serve: listening on ") {
            addr = Some(a.trim_end_matches(']').to_string());
        }
        if let Some(f) = line.split("fingerprint ").nth(1) {
            fp = Some(f.trim_end_matches(']').to_string());
        }
    }
    let (addr, fp) = (addr.unwrap(), fp.unwrap());
    let client = |token: &str, k: &str| {
        Command::new(bin)
            .args([
                "client",
                "The patient was diagnosed with",
                "--max-tokens",
                "6",
                "--encrypted-layers",
                k,
                "--server",
                &addr,
                "--fingerprint",
                &fp,
                "--token-env",
                "SELENE_TEST_TOKEN",
            ])
            .env("SELENE_TEST_TOKEN", token)
            .output()
            .expect("run selene client")
    };
    let out = client(TOKEN, "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The same greedy tokens as `selene plain` (ARCHITECTURE.md's known answer).
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " a rare genetic disorder that affects\n"
    );
    assert!(err.contains("released 10 hidden-state rows"), "{err}");

    let out = client("wrong", "1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthorized"), "{err}");
    drop(server);
}

#[test]
fn serve_refuses_a_weak_token_and_new_token_prints_a_strong_one() {
    let bin = env!("CARGO_BIN_EXE_selene");
    for weak in [
        "s3cret",
        "00000000000000000000000000000000",
        "6f1c9e0a4b7d2385",
    ] {
        let out = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--self-signed"])
            .args(["--token-env", "SELENE_TEST_TOKEN"])
            .env("SELENE_TEST_TOKEN", weak)
            .output()
            .expect("run selene serve");
        assert!(!out.status.success(), "{weak}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--new-token"), "{weak}: {err}");
    }
    let out = Command::new(bin)
        .args(["serve", "--new-token"])
        .output()
        .expect("run selene serve --new-token");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim_end();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|c| c.is_ascii_hexdigit()), "{token}");
    selene_protocol::check_token_strength(token.as_bytes()).unwrap();
}
