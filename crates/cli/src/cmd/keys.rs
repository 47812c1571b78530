//! `selene keys`: create, inspect, rotate and export a keystore, sign its release policy,
//! and verify the release log (crates/keys, docs/keys.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use selene_keys::{
    log, KdfParams, Keystore, OwnerPolicy, PassphraseRoot, Pkcs11Root, RootKey, TokenLocation,
};
use selene_linalg::LinalgPreset;
use selene_protocol::policy::DEFAULT_FLOOD_SIGMA;
use zeroize::Zeroizing;

/// Arguments of `selene keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Keystore directory (default: $SELENE_HOME/keys, i.e. ~/.cache/selene/keys).
    #[arg(long, global = true, value_name = "DIR")]
    keystore: Option<PathBuf>,
    /// Environment variable holding the passphrase or PIN (default: the one recorded
    /// by `keys init`).
    #[arg(long, global = true, value_name = "VAR")]
    secret_env: Option<String>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a keystore: a root key on a PKCS#11 token or behind a passphrase, and a
    /// fresh keystore key wrapped by it.
    Init(InitArgs),
    /// Show the keystore: identity, backend, key fingerprint, policy, persisted
    /// sessions, release log.
    List,
    /// Replace the keystore key (re-wraps persisted session keys, re-signs the policy
    /// and the log head; the root and the data stay).
    Rotate,
    /// Print the keystore's public parts as JSON (nothing secret).
    ExportPublic,
    /// Sign a new release policy with the keystore key.
    Policy(PolicyArgs),
    /// Print the release log; with --verify, check its hash chain and signed head.
    AuditLog(AuditLogArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// PKCS#11 module (shared library) holding the root key, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "MODULE", conflicts_with = "passphrase_env")]
    pkcs11: Option<PathBuf>,
    /// Slot id of the token (as `softhsm2-util --show-slots` prints it).
    #[arg(long, value_name = "N", requires = "pkcs11")]
    slot: Option<u64>,
    /// Label of the token, instead of a slot id.
    #[arg(
        long,
        value_name = "LABEL",
        requires = "pkcs11",
        conflicts_with = "slot"
    )]
    token_label: Option<String>,
    /// Environment variable holding the token's user PIN.
    #[arg(
        long,
        value_name = "VAR",
        requires = "pkcs11",
        default_value = "SELENE_PKCS11_PIN"
    )]
    pin_env: String,
    /// Environment variable holding the passphrase (the default backend).
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// The client identity the root key belongs to (default: $USER).
    #[arg(long)]
    identity: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// Allow selective mode's residual release after this many encrypted layers (none:
    /// strict mode only, every release refused).
    #[arg(long, value_name = "K")]
    allow_release_after: Option<usize>,
    /// Least flooding sigma a release must carry.
    #[arg(long, default_value_t = DEFAULT_FLOOD_SIGMA)]
    min_sigma: f64,
    /// Rows released per session, at most.
    #[arg(long, default_value_t = 4096)]
    max_per_session: u64,
    /// Rows released under one session key, at most (persisted keys are reused).
    #[arg(long, default_value_t = 4096)]
    max_per_key: u64,
}

impl PolicyArgs {
    fn policy(&self) -> OwnerPolicy {
        match self.allow_release_after {
            None => OwnerPolicy::strict(),
            Some(k) => {
                OwnerPolicy::selective(k, self.min_sigma, self.max_per_session, self.max_per_key)
            }
        }
    }
}

#[derive(Debug, Args)]
struct AuditLogArgs {
    /// Verify the hash chain and the head signed with the keystore key; fail on any
    /// break.
    #[arg(long)]
    verify: bool,
}

/// Names the linalg preset a persisted session key's CKKS parameters fingerprint belongs
/// to (each preset built once, its fingerprint compared), `"unknown"` for any other.
fn preset_namer() -> impl Fn([u8; 8]) -> String {
    let known: Vec<([u8; 8], LinalgPreset)> = LinalgPreset::ALL
        .into_iter()
        .filter_map(|p| Some((p.build().ok()?.fingerprint(), p)))
        .collect();
    move |fingerprint| {
        known
            .iter()
            .find(|(f, _)| *f == fingerprint)
            .map_or_else(|| "unknown".to_string(), |(_, p)| p.name().to_string())
    }
}

/// Runs `selene keys`.
pub fn run(args: &KeysArgs) -> anyhow::Result<()> {
    let dir = args.keystore.clone().unwrap_or_else(super::args::keys_dir);
    let open = || {
        Keystore::open_env(&dir, args.secret_env.as_deref())
            .with_context(|| format!("opening the keystore at {}", dir.display()))
    };
    match &args.command {
        KeysCommand::Init(a) => init(&dir, a),
        KeysCommand::List => list(&open()?),
        KeysCommand::Rotate => {
            let mut ks = open()?;
            let before = ks.fingerprint();
            ks.rotate()?;
            eprintln!(
                "[keys: keystore key rotated: generation {}, fingerprint {before} -> {}; {} \
                 persisted session keys re-wrapped]",
                ks.header().generation,
                ks.fingerprint(),
                ks.sessions().len()
            );
            Ok(())
        }
        KeysCommand::ExportPublic => export_public(&open()?),
        KeysCommand::Policy(p) => {
            let mut ks = open()?;
            ks.sign_policy(&p.policy())?;
            print!("{}", ks.signed_policy().0);
            eprintln!("[keys: release policy signed with the keystore key]");
            Ok(())
        }
        KeysCommand::AuditLog(a) => audit_log(&dir, a.verify, &open),
    }
}

fn secret_from(var: &str, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let s = Zeroizing::new(std::env::var(var).unwrap_or_default());
    anyhow::ensure!(
        !s.is_empty(),
        "environment variable {var} must hold the {what}"
    );
    Ok(s)
}

fn init(dir: &Path, a: &InitArgs) -> anyhow::Result<()> {
    let identity = a
        .identity
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "default".to_string());
    let root: Box<dyn RootKey> = match &a.pkcs11 {
        Some(module) => {
            let pin = secret_from(&a.pin_env, "token's user PIN")?;
            let at = TokenLocation {
                module: module.clone(),
                slot: a.slot,
                serial: None,
                label: a.token_label.clone(),
            };
            let pin = selene_keys::AuthPin::from(pin.as_str());
            Box::new(Pkcs11Root::create(&at, &pin, &a.pin_env, &identity)?)
        }
        None => {
            let var = a.passphrase_env.as_deref().unwrap_or("SELENE_PASSPHRASE");
            let pass = secret_from(var, "passphrase")?;
            Box::new(PassphraseRoot::create(
                pass.as_bytes(),
                KdfParams::DEFAULT,
                var,
            )?)
        }
    };
    let ks = Keystore::init(dir, &identity, root, &a.policy.policy())?;
    eprintln!(
        "[keys: keystore created at {} for identity {identity:?}: {}; keystore key \
         fingerprint {}]",
        dir.display(),
        ks.header().backend.summary(),
        ks.fingerprint()
    );
    Ok(())
}

fn list(ks: &Keystore) -> anyhow::Result<()> {
    let h = ks.header();
    println!("keystore    {}", ks.dir().display());
    println!("identity    {}", h.identity);
    println!("id          {}", hex::encode(h.id));
    println!("root        {}", h.backend.summary());
    println!(
        "keystore key generation {}, fingerprint {}",
        h.generation,
        ks.fingerprint()
    );
    let p = ks.policy();
    if p.allow.is_empty() {
        println!("policy      strict only: every release refused");
    } else {
        for a in &p.allow {
            println!(
                "policy      release {:?} after layer {}: sigma >= {}, <= {} rows per session, \
                 <= {} rows per key",
                a.tensor, a.after_layer, p.min_flood_sigma, p.max_per_session, p.max_per_key
            );
        }
    }
    let sessions = ks.sessions();
    println!("sessions    {} persisted", sessions.len());
    let preset = preset_namer();
    for s in sessions {
        println!("  {}  {}  created {}", s.id, preset(s.params), s.created);
    }
    let log = ks.verify_log()?;
    println!(
        "release log {} releases, head {} (chain and signed head verified)",
        log.lines,
        hex::encode(log.head)
    );
    Ok(())
}

fn export_public(ks: &Keystore) -> anyhow::Result<()> {
    let h = ks.header();
    let (policy, tag) = ks.signed_policy();
    let log = ks.verify_log()?;
    let preset = preset_namer();
    let out = serde_json::json!({
        "identity": h.identity,
        "keystore_id": hex::encode(h.id),
        "generation": h.generation,
        "created": h.created,
        "backend": h.backend.kind(),
        "root": h.backend.summary(),
        "keystore_key_fingerprint": ks.fingerprint(),
        "policy_toml": policy,
        "policy_hmac_sha256": hex::encode(tag),
        "sessions": ks.sessions().iter().map(|s| serde_json::json!({
            "id": s.id, "preset": preset(s.params),
            "params_fingerprint": hex::encode(s.params), "created": s.created
        })).collect::<Vec<_>>(),
        "release_log": { "releases": log.lines, "head_sha256": hex::encode(log.head) },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn audit_log(
    dir: &Path,
    verify: bool,
    open: &dyn Fn() -> anyhow::Result<Keystore>,
) -> anyhow::Result<()> {
    let path = dir.join(log::LOG_FILE);
    if verify {
        let ks = open()?;
        let s = ks
            .verify_log()
            .with_context(|| format!("verifying {}", path.display()))?;
        let per_key: Vec<String> = s
            .rows_per_key
            .iter()
            .map(|(k, r)| format!("{k}: {r} rows"))
            .collect();
        println!(
            "OK: {} releases, hash chain intact, signed head matches ({})",
            s.lines,
            if per_key.is_empty() {
                "none".to_string()
            } else {
                per_key.join(", ")
            }
        );
        return Ok(());
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    println!("seq  time        key                               layer  rows  sigma     digest");
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<log::LogEntry>(line) {
            Ok(e) => println!(
                "{:<4} {:<11} {:<33} {:<6} {:<5} {:<9} {}",
                e.seq,
                e.time,
                e.key,
                e.after_layer,
                e.rows,
                e.flood_sigma,
                e.digest.get(..16).unwrap_or(&e.digest)
            ),
            Err(_) => println!("{:<4} (unreadable line)", i + 1),
        }
    }
    eprintln!("[keys: not verified; `selene keys audit-log --verify` checks the chain and its signed head]");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_show_the_preset_their_parameters_fingerprint_belongs_to() {
        let name = preset_namer();
        for (preset, shown) in [
            (LinalgPreset::Coeff11, "coeff11"),
            (LinalgPreset::Coeff12, "coeff12"),
            (LinalgPreset::Coeff12Wide, "coeff12wide"),
            (LinalgPreset::Slots13, "slots13"),
        ] {
            assert_eq!(name(preset.build().unwrap().fingerprint()), shown);
        }
        let other = selene_ckks::ExampleParams::Test12.build().unwrap();
        assert_eq!(name(other.fingerprint()), "unknown");
    }
}
