//! `selene keys` end to end, as a user runs it: a passphrase keystore and a PKCS#11
//! keystore on a throw-away SoftHSM2 token (init, list, rotate, export-public,
//! audit-log --verify), and the errors a wrong secret or a second init give.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

#[path = "../../keys/tests/softhsm/mod.rs"]
mod softhsm;

use std::path::Path;
use std::process::{Command, Output};

fn selene(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (Output, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selene"));
    cmd.args(["keys", "--keystore"]).arg(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn ok(r: (Output, String, String)) -> String {
    assert!(r.0.status.success(), "stdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

fn fails_with(r: (Output, String, String), needle: &str) {
    assert!(!r.0.status.success(), "should fail: {}", r.1);
    assert!(r.2.contains(needle), "expected {needle:?} in: {}", r.2);
}

/// The commands every backend must support, after `init`.
fn exercise(dir: &Path, env: &[(&str, &str)], backend: &str) {
    let list = ok(selene(dir, env, &["list"]));
    assert!(list.contains(&format!("root        {backend}")), "{list}");
    assert!(list.contains("strict only"), "{list}");
    let before: serde_json::Value =
        serde_json::from_str(&ok(selene(dir, env, &["export-public"]))).unwrap();
    assert_eq!(before["backend"], backend);
    assert_eq!(before["generation"], 0);
    ok(selene(dir, env, &["rotate"]));
    ok(selene(
        dir,
        env,
        &[
            "policy",
            "--allow-release-after",
            "4",
            "--max-per-session",
            "64",
        ],
    ));
    let after: serde_json::Value =
        serde_json::from_str(&ok(selene(dir, env, &["export-public"]))).unwrap();
    assert_eq!(after["generation"], 1);
    assert_ne!(
        before["keystore_key_fingerprint"],
        after["keystore_key_fingerprint"]
    );
    assert!(after["policy_toml"]
        .as_str()
        .unwrap()
        .contains("max_per_session = 64"));
    let text = serde_json::to_string(&after).unwrap();
    assert!(!text.contains("wrapped"), "{text}");
    let verify = ok(selene(dir, env, &["audit-log", "--verify"]));
    assert!(verify.starts_with("OK: 0 releases"), "{verify}");
}

#[test]
fn passphrase_keystore_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let env = [("MY_PASS", "a long enough passphrase")];
    ok(selene(
        &dir,
        &env,
        &["init", "--passphrase-env", "MY_PASS", "--identity", "ann"],
    ));
    exercise(&dir, &env, "passphrase");
    fails_with(
        selene(&dir, &[("MY_PASS", "not the passphrase")], &["list"]),
        "wrong passphrase",
    );
    fails_with(selene(&dir, &[], &["list"]), "MY_PASS");
    fails_with(
        selene(&dir, &env, &["init", "--passphrase-env", "MY_PASS"]),
        "already exists",
    );
    fails_with(
        selene(
            &tmp.path().join("weak"),
            &[("W", "short")],
            &["init", "--passphrase-env", "W"],
        ),
        "at least 8",
    );
}

#[test]
fn pkcs11_keystore_lifecycle_on_softhsm() {
    let Some(hsm) = softhsm::softhsm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let conf = hsm.conf.to_str().unwrap();
    let env = [("SOFTHSM2_CONF", conf), ("TOKEN_PIN", softhsm::PIN)];
    let module = hsm.module.to_str().unwrap();
    ok(selene(
        &dir,
        &env,
        &[
            "init",
            "--pkcs11",
            module,
            "--token-label",
            "t-cli",
            "--pin-env",
            "TOKEN_PIN",
        ],
    ));
    exercise(&dir, &env, "pkcs11");
    fails_with(
        selene(
            &dir,
            &[("SOFTHSM2_CONF", conf), ("TOKEN_PIN", "999999")],
            &["list"],
        ),
        "rejected the PIN",
    );
}
