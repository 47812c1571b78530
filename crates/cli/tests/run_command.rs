//! `selene run`, the main job, as the user runs it: encrypted generation in one process.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn selene(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selene"))
        .args(args)
        .output()
        .expect("run selene");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[test]
fn run_streams_the_plaintext_continuation_computed_under_encryption() {
    let (out, stderr) = selene(&["run", "The patient was diagnosed with", "--max-tokens", "6"]);
    assert!(out.status.success(), "{stderr}");
    // The same greedy tokens as `selene plain` (ARCHITECTURE.md's known answer), with
    // only the text on stdout.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " a rare genetic disorder that affects\n"
    );
    assert!(
        stderr.contains("strict mode: all 30 layers encrypted"),
        "{stderr}"
    );
    assert!(stderr.contains("MB up"), "{stderr}");
}

#[test]
fn fused_run_gives_the_same_text_in_two_round_trips_per_layer() {
    let (out, stderr) = selene(&[
        "run",
        "The patient was diagnosed with",
        "--max-tokens",
        "4",
        "--fuse",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " a rare genetic disorder\n"
    );
    assert!(stderr.contains("fused matrices"), "{stderr}");
    // Hello, the prompt's pass unfused (4 * 30), three decoded tokens at 2 * 30 + 1
    // each, Close.
    assert!(stderr.contains("; 305 round trips]"), "{stderr}");
    // Selective mode fuses its encrypted layers: Hello, the Galois keys, the prompt's
    // pass unfused (4 * 2 and the release), three decoded tokens at 2 * 2 + 1 each (layer
    // 0's q|k|v ahead, two pairs less the last q|k|v, the last down, the release), Close.
    let (out, stderr) = selene(&[
        "run",
        "The patient was diagnosed with",
        "--max-tokens",
        "4",
        "--fuse",
        "--encrypted-layers",
        "2",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " a rare genetic disorder\n"
    );
    assert!(stderr.contains("; 27 round trips]"), "{stderr}");
    // With no encrypted layer there is nothing to fuse.
    let (out, stderr) = selene(&["run", "hi", "--fuse", "--encrypted-layers", "0"]);
    assert!(!out.status.success());
    assert!(stderr.contains("nothing to fuse"), "{stderr}");
    // `--fuse auto` asks the cost model: unpacked, the stacked products' bytes outweigh
    // the round trips even at 20 ms (coeff12's fused run measured slower on wan), so
    // the run is unfused: 4 * 30 round trips for the one pass, plus Hello and Close.
    let (out, stderr) = selene(&[
        "run",
        "hi",
        "--max-tokens",
        "1",
        "--fuse=auto",
        "--link",
        "wan",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[plan for link wan: not fusing: it does not pay"),
        "{stderr}"
    );
    assert!(stderr.contains("; 122 round trips]"), "{stderr}");
}

#[test]
fn run_rejects_bad_sampling_parameters() {
    let (out, stderr) = selene(&["run", "hi", "--temperature", "-1"]);
    assert!(!out.status.success());
    assert!(stderr.contains("error:"), "{stderr}");
}

#[test]
fn selective_mode_prints_its_measured_leakage_and_matches_plaintext() {
    let (out, stderr) = selene(&[
        "run",
        "The patient was diagnosed with",
        "--max-tokens",
        "6",
        "--encrypted-layers",
        "1",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " a rare genetic disorder that affects\n"
    );
    // The shipped audit table (docs/audit.md) says K = 1 gives every token away.
    assert!(
        stderr.contains("recovered 100.0% of prompt tokens"),
        "{stderr}"
    );
    assert!(stderr.contains("released 10 hidden-state rows"), "{stderr}");
}

#[test]
fn encrypted_layers_beyond_the_model_are_refused() {
    let (out, stderr) = selene(&["run", "hi", "--encrypted-layers", "31"]);
    assert!(!out.status.success());
    assert!(stderr.contains("out of range"), "{stderr}");
}

#[test]
fn verify_rate_spot_checks_products_and_the_thin_client_refuses_it() {
    let (out, stderr) = selene(&[
        "run",
        "The patient was diagnosed with",
        "--max-tokens",
        "3",
        "--encrypted-layers",
        "1",
        "--verify-rate",
        "1",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(" a rare"),
        "{stderr}"
    );
    assert!(stderr.contains("all agreed"), "{stderr}");

    let (out, stderr) = selene(&["run", "hi", "--verify-rate", "1.5"]);
    assert!(!out.status.success());
    assert!(stderr.contains("within 0..=1"), "{stderr}");

    // The thin client holds no layer matrix: refused before it connects anywhere.
    let zeros = "0".repeat(64);
    let (out, stderr) = selene(&[
        "client",
        "hi",
        "--server",
        "127.0.0.1:9",
        "--fingerprint",
        &zeros,
        "--token",
        &zeros,
        "--verify-rate",
        "0.5",
    ]);
    assert!(!out.status.success());
    assert!(stderr.contains("--full-model"), "{stderr}");
}
