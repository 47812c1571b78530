//! `selene audit`, run as the user runs it, on a tiny configuration.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

#[test]
fn audit_prints_the_table_and_writes_json_and_svg() {
    let dir = std::env::temp_dir().join(format!("selene-audit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("a.json"), dir.join("a.svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_selene"))
        .args([
            "audit",
            "--layers",
            "0,1",
            "--flood",
            "0",
            "--limit",
            "2",
            "--threads",
            "2",
            "--json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("run selene");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("| 1 | 0 | 100.0% | 100.0% |"), "{stdout}");
    assert!(stdout.contains("strict"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["k"], 1);
    assert_eq!(rows[1]["token_recovery"], 1.0);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audit_refuses_a_layer_past_the_model() {
    let out = Command::new(env!("CARGO_BIN_EXE_selene"))
        .args(["audit", "--layers", "31", "--limit", "1"])
        .output()
        .expect("run selene");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out of range"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
