//! Keystore tests with the passphrase backend: round trips, rotation, and every kind of
//! damage or splicing detected with its own error.

use selene_ckks::{ExampleParams, Parameters};

use super::*;
use crate::passphrase::KdfParams;

const PASS: &[u8] = b"correct horse battery";

fn new_store(dir: &Path) -> Keystore {
    let root = PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "SELENE_PASSPHRASE").unwrap();
    Keystore::init(
        dir,
        "alice",
        Box::new(root),
        &OwnerPolicy::selective(2, 0.5, 8, 16),
    )
    .unwrap()
}

/// The small CKKS parameter set the session keys here are made for.
fn test12() -> std::sync::Arc<Parameters> {
    ExampleParams::Test12.build().unwrap()
}

fn open(dir: &Path) -> Result<Keystore> {
    Keystore::open(dir, Unlock::Passphrase(PASS))
}

#[test]
fn wrapped_session_keys_round_trip_and_survive_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let mut ks = new_store(&dir);
    let mode = std::fs::metadata(dir.join(KEYSTORE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (p12, p13) = (test12(), ExampleParams::Anchor13.build().unwrap());
    let a = SessionKey::fresh(&p13);
    let b = SessionKey::fresh(&p12);
    ks.persist_session(&a).unwrap();
    ks.persist_session(&b).unwrap();
    let fp = ks.fingerprint();
    drop(ks);

    let mut ks = open(&dir).unwrap();
    assert_eq!(ks.sessions().len(), 2);
    assert_eq!(ks.policy(), &OwnerPolicy::selective(2, 0.5, 8, 16));
    let a2 = ks.load_session(&a.id_hex()).unwrap();
    assert!(a2.seed().ct_eq(a.seed()));
    assert_eq!(a2.params_fingerprint(), p13.fingerprint());
    assert_eq!(ks.sessions()[0].params, p13.fingerprint());
    assert!(matches!(
        ks.load_session("00"),
        Err(Error::NoSuchSession { .. })
    ));
    let before = std::fs::read(dir.join(KEYSTORE_FILE)).unwrap();
    ks.rotate().unwrap();
    assert_ne!(ks.fingerprint(), fp);
    assert_eq!(ks.header().generation, 1);
    drop(ks);
    let after = std::fs::read(dir.join(KEYSTORE_FILE)).unwrap();
    assert_ne!(before, after);
    let ks = open(&dir).unwrap();
    assert!(ks.load_session(&b.id_hex()).unwrap().seed().ct_eq(b.seed()));
    assert!(ks.load_session(&a.id_hex()).unwrap().seed().ct_eq(a.seed()));
    // The rotated file no longer opens under the old keystore key's wrap.
    assert!(format!("{ks:?}").contains("[redacted]"));
    assert!(matches!(
        Keystore::init(
            &dir,
            "alice",
            Box::new(PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "P").unwrap()),
            &OwnerPolicy::strict()
        ),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn wrong_passphrase_and_wrong_kind_of_secret_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    new_store(tmp.path());
    assert!(matches!(
        Keystore::open(tmp.path(), Unlock::Passphrase(b"wrong horse battery")),
        Err(Error::WrongPassphrase)
    ));
    let pin = AuthPin::from("1234");
    assert!(matches!(
        Keystore::open(
            tmp.path(),
            Unlock::Pin {
                pin: &pin,
                module: None
            }
        ),
        Err(Error::WrongUnlock { .. })
    ));
}

#[test]
fn every_truncation_and_every_bit_flip_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ks = new_store(tmp.path());
    ks.persist_session(&SessionKey::fresh(&test12())).unwrap();
    drop(ks);
    let path = tmp.path().join(KEYSTORE_FILE);
    let good = std::fs::read(&path).unwrap();
    for cut in 0..good.len() {
        write_private(&path, &good[..cut]).unwrap();
        let e = open(tmp.path()).unwrap_err();
        assert!(
            matches!(e, Error::Truncated { .. } | Error::InvalidField { .. }),
            "cut at {cut}: {e}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    write_private(&path, &long).unwrap();
    assert!(matches!(
        open(tmp.path()),
        Err(Error::TrailingBytes { extra: 1 })
    ));
    let mut kinds = std::collections::HashSet::new();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        write_private(&path, &bad).unwrap();
        let e = open(tmp.path()).unwrap_err();
        kinds.insert(std::mem::discriminant(&e));
        assert!(
            !matches!(e, Error::Io { .. }),
            "flip at {i} gave an unrelated error: {e}"
        );
    }
    // Header flips fail the wrap's AAD or the KDF check, body flips the MAC.
    assert!(kinds.len() >= 3, "{kinds:?}");
    write_private(&path, &good).unwrap();
    open(tmp.path()).unwrap();
}

#[test]
fn swapped_wrapped_keys_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("one"), tmp.path().join("two"));
    let mut k1 = new_store(&d1);
    new_store(&d2);
    let (s1, s2) = (SessionKey::fresh(&test12()), SessionKey::fresh(&test12()));
    k1.persist_session(&s1).unwrap();
    k1.persist_session(&s2).unwrap();
    drop(k1);
    let b1 = std::fs::read(d1.join(KEYSTORE_FILE)).unwrap();
    let b2 = std::fs::read(d2.join(KEYSTORE_FILE)).unwrap();
    let (p1, p2) = (parse(&b1).unwrap(), parse(&b2).unwrap());

    // Keystore two's wrapped keystore key (same passphrase) in keystore one's file.
    let i = b1
        .windows(p1.wrapped_ksk.len())
        .position(|w| w == p1.wrapped_ksk)
        .unwrap();
    let mut spliced = b1.clone();
    spliced[i..i + p1.wrapped_ksk.len()].copy_from_slice(&p2.wrapped_ksk);
    write_private(&d1.join(KEYSTORE_FILE), &spliced).unwrap();
    assert!(matches!(
        open(&d1),
        Err(Error::Unwrap {
            what: "keystore key"
        })
    ));

    // The two sessions' wrapped seeds exchanged: the MAC catches the file...
    let (w1, w2) = (&p1.sessions[0].wrapped, &p1.sessions[1].wrapped);
    let (i1, i2) = (
        b1.windows(w1.len()).position(|w| w == &w1[..]).unwrap(),
        b1.windows(w2.len()).position(|w| w == &w2[..]).unwrap(),
    );
    let mut swapped = b1.clone();
    swapped[i1..i1 + w1.len()].copy_from_slice(w2);
    swapped[i2..i2 + w2.len()].copy_from_slice(w1);
    write_private(&d1.join(KEYSTORE_FILE), &swapped).unwrap();
    assert!(matches!(open(&d1), Err(Error::KeystoreMac)));
    // ... and the session AAD catches the seed itself, even past the MAC.
    write_private(&d1.join(KEYSTORE_FILE), &b1).unwrap();
    let mut ks = open(&d1).unwrap();
    ks.sessions.swap(0, 1);
    let (a, b) = (ks.sessions[0].id, ks.sessions[1].id);
    ks.sessions[0].id = b;
    ks.sessions[1].id = a;
    assert!(matches!(
        ks.load_session(&s1.id_hex()),
        Err(Error::Unwrap {
            what: "session key"
        })
    ));
}

#[test]
fn edited_policy_and_loose_permissions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ks = new_store(tmp.path());
    // A policy rewritten in place (MAC recomputed as if by someone holding only the
    // keystore MAC key) still fails its own tag.
    let (text, tag) = ks.signed_policy();
    let (text, tag) = (text.to_string(), tag);
    ks.policy_text = text.replace("max_per_session = 8", "max_per_session = 9999");
    ks.save().unwrap();
    assert!(matches!(open(tmp.path()), Err(Error::PolicyMac)));
    ks.policy_text = text;
    ks.policy_tag = tag;
    ks.save().unwrap();
    open(tmp.path()).unwrap();
    let path = tmp.path().join(KEYSTORE_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        open(tmp.path()),
        Err(Error::Permissions { mode: 0o644, .. })
    ));
    // Root wraps are bound to the header: the same bytes under another header fail.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut ks = open(tmp.path()).unwrap();
    let k = KeyBytes::random();
    let w = ks.root_mut().wrap(&k, b"header one").unwrap();
    assert!(ks.root_mut().unwrap(&w, b"header two").is_err());
}

#[test]
fn an_identity_too_long_to_store_is_refused_not_cut() {
    // Issue 16: the old writer cut a field to its 4096-byte cap and wrote the keystore
    // anyway, so the identity read back was not the one given.
    let tmp = tempfile::tempdir().unwrap();
    let root = PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "SELENE_PASSPHRASE").unwrap();
    let identity = "a".repeat(crate::format::MAX_FIELD + 1);
    let policy = OwnerPolicy::selective(2, 0.5, 8, 16);
    match Keystore::init(tmp.path(), &identity, Box::new(root), &policy) {
        Err(Error::TooLong {
            field: "identity",
            len: 4097,
            max: 4096,
        }) => {}
        other => panic!("{:?}", other.map(|_| "a keystore")),
    }
    assert!(!tmp.path().join(KEYSTORE_FILE).exists());
    let root = PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "SELENE_PASSPHRASE").unwrap();
    let identity = "a".repeat(crate::format::MAX_FIELD);
    Keystore::init(tmp.path(), &identity, Box::new(root), &policy).unwrap();
    assert_eq!(Keystore::peek(tmp.path()).unwrap().identity, identity);
}

#[test]
fn parsed_file_encodes_back_to_its_bytes() {
    // The format is canonical: the fuzz target `keystore` relies on parse then encode
    // giving back the file, with the header and MAC'd body lengths where parse saw them.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let mut ks = new_store(&dir);
    ks.persist_session(&SessionKey::fresh(&test12())).unwrap();
    let bytes = std::fs::read(dir.join(KEYSTORE_FILE)).unwrap();
    let p = parse(&bytes).unwrap();
    assert_eq!(p.encode().unwrap(), bytes);
    assert_eq!(p.header_len, p.header.encode().unwrap().len());
    assert_eq!(p.body_len, bytes.len() - 32);
    assert_eq!(p.sessions.len(), 1);
}

#[test]
fn version_1_keystores_are_refused_with_what_to_do() {
    // Version 1 stored a one-byte linalg preset code per session; version 2 stores the
    // CKKS parameters' fingerprint. An old file is refused by name, before any unlock.
    let tmp = tempfile::tempdir().unwrap();
    let mut ks = new_store(tmp.path());
    ks.persist_session(&SessionKey::fresh(&test12())).unwrap();
    drop(ks);
    let path = tmp.path().join(KEYSTORE_FILE);
    let mut old = std::fs::read(&path).unwrap();
    assert_eq!(old[4..6], VERSION.to_le_bytes());
    old[4..6].copy_from_slice(&1u16.to_le_bytes());
    write_private(&path, &old).unwrap();
    for e in [
        open(tmp.path()).unwrap_err(),
        Keystore::peek(tmp.path()).unwrap_err(),
    ] {
        assert!(
            matches!(
                e,
                Error::UnsupportedVersion {
                    found: 1,
                    supported: 2
                }
            ),
            "{e}"
        );
        let shown = e.to_string();
        assert!(
            shown.contains("older Selene") && shown.contains("selene keys init"),
            "{shown}"
        );
    }
    old[4..6].copy_from_slice(&3u16.to_le_bytes());
    write_private(&path, &old).unwrap();
    let shown = open(tmp.path()).unwrap_err().to_string();
    assert!(shown.contains("newer Selene"), "{shown}");
}
