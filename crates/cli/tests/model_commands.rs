//! The plaintext model commands, run as the user runs them.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used)]

use std::process::Command;

fn selene(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_selene"))
        .args(args)
        .output()
        .expect("run selene")
}

#[test]
fn tokenize_prints_ids_on_one_line() {
    let out = selene(&["tokenize", "Hello world 2024<|im_end|>"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Digits one by one, the special token as its id, no BOS.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "19556 905 216 34 32 34 36 2\n"
    );
}

#[test]
fn plain_streams_only_the_continuation_to_stdout() {
    let out = selene(&[
        "plain",
        "The patient was diagnosed with",
        "--max-tokens",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        " a rare genetic disorder that affects the immune system.\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));
}

#[test]
fn plain_chat_stops_at_end_of_turn() {
    let out = selene(&[
        "plain",
        "What is the capital of France?",
        "--chat",
        "--max-tokens",
        "40",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Paris") && !text.contains("<|im_end|>"),
        "{text}"
    );
}

#[test]
fn seeded_sampling_is_reproducible_and_bad_parameters_fail() {
    let args = [
        "plain",
        "Once upon a time",
        "--max-tokens",
        "12",
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--seed",
        "7",
    ];
    let (a, b) = (selene(&args), selene(&args));
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let bad = selene(&["plain", "x", "--temperature=-1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("temperature"));
}

/// An error names its cause once: the library messages leave the source's text to the
/// chain that `main` prints (`could not load the model: PATH: No such file or directory
/// (os error 2)`, not the OS message twice).
#[test]
fn a_missing_model_file_is_reported_with_its_cause_once() {
    let missing = "/nonexistent/selene-test/missing.gguf";
    let out = selene(&["plain", "hi", "--model", missing]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not load the model"), "{stderr}");
    assert!(stderr.contains(missing), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}
