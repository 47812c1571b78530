//! `selene run --public-context FILE` and `--pad-to`, as the user runs them.

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
fn public_context_then_private_prompt_matches_plain_on_the_whole_text() {
    let doc = include_str!("../../../testdata/public_context.txt");
    // The first two paragraphs, ending with a newline (a token boundary).
    let cut = doc.match_indices("\n\n").nth(1).expect("two paragraphs").0 + 1;
    let path = std::env::temp_dir().join(format!("selene-ctx-{}.txt", std::process::id()));
    std::fs::write(&path, &doc[..cut]).expect("write the context");
    let prompt = "On Saturdays the library closes at";
    let ctx = path.to_str().expect("utf-8 path");
    let (out, stderr) = selene(&[
        "run",
        prompt,
        "--public-context",
        ctx,
        "--encrypted-layers",
        "1",
        "--max-tokens",
        "5",
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tokens ran in plaintext on the server"),
        "{stderr}"
    );
    assert!(!stderr.contains("token boundary"), "{stderr}");
    let whole = format!("{}{prompt}", &doc[..cut]);
    let (plain, pstderr) = selene(&["plain", &whole, "--max-tokens", "5"]);
    assert!(plain.status.success(), "{pstderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim().len() >= 2, "{text:?}");
    assert_eq!(text, String::from_utf8_lossy(&plain.stdout));
}

#[test]
fn padding_with_a_release_is_refused() {
    let (out, stderr) = selene(&["run", "hi", "--encrypted-layers", "4", "--pad-to", "8"]);
    assert!(!out.status.success());
    assert!(stderr.contains("padding hides nothing"), "{stderr}");
}
