//! `selene bench e2e` on SmolLM2 with a few rows chosen: the strict row's tokens equal
//! the plaintext model's, and the LM head placement row measures both placements with
//! logits that agree.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

fn selene(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selene"))
        .args(args)
        .output()
        .expect("run selene");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chosen_rows_run_alone_and_the_lm_head_row_measures_both_placements() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e2e.json");
    let (ok, stdout, stderr) = selene(&[
        "bench",
        "e2e",
        "--row",
        "strict",
        "--row",
        "lm-head",
        "--prompt-tokens",
        "3",
        "--tokens",
        "2",
        "--threads",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = doc["results"].as_array().unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["strict", "lm_head"], "{stdout}");
    assert_eq!(rows[0]["tokens_equal_plain"], true, "{stdout}");
    let head = &rows[1];
    assert_eq!(
        (head["d_model"].as_u64(), head["vocab"].as_u64()),
        (Some(576), Some(49_152))
    );
    // Packed coeff12pack products keep about 15 bits: SmolLM2's logits (tens) agree
    // to a few hundredths, and the argmax with them.
    let err = head["max_logit_err"].as_f64().unwrap();
    assert!(err < 0.05, "max logit error {err}");
    assert_eq!(head["argmax_equal"], true);
    assert!(head["encrypted_bytes_down"].as_u64().unwrap() > 0);
    assert!(head["client_plain_cpu_s"].as_f64().unwrap() > 0.0);
    let choice = head["choice"].as_str().unwrap();
    assert!(choice == "client" || choice == "server", "{choice}");
    assert!(stdout.contains("the plan puts it on the"), "{stdout}");
    // Rows not asked for print no empty tables.
    assert!(!stdout.contains("perplexity "), "{stdout}");
}

#[test]
fn prompt_tokens_beyond_the_committed_prompt_are_refused() {
    let (ok, _, stderr) = selene(&["bench", "e2e", "--prompt-tokens", "33"]);
    assert!(!ok);
    assert!(stderr.contains("--prompt-tokens"), "{stderr}");
}
