//! The PKCS#11 backend against a real SoftHSM2 token: wrapped keys round-trip, the root
//! key cannot be read off the token, a wrong PIN and tampered or swapped wrapped keys
//! are each refused with their own error.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod softhsm;

use cryptoki::types::AuthPin;
use selene_ckks::ExampleParams;
use selene_keys::{
    Error, Keystore, OwnerPolicy, Pkcs11Root, RootKey, SessionKey, TokenLocation, Unlock,
    KEYSTORE_FILE,
};

fn at(module: &std::path::Path, label: &str) -> TokenLocation {
    TokenLocation {
        module: module.to_path_buf(),
        slot: None,
        serial: None,
        label: Some(label.to_string()),
    }
}

fn pin() -> AuthPin {
    AuthPin::from(softhsm::PIN)
}

fn init(dir: &std::path::Path, token: &str, identity: &str) -> Keystore {
    let hsm = softhsm::softhsm().unwrap();
    let root = Pkcs11Root::create(&at(&hsm.module, token), &pin(), "PIN_VAR", identity).unwrap();
    Keystore::init(dir, identity, Box::new(root), &OwnerPolicy::strict()).unwrap()
}

fn open(dir: &std::path::Path) -> selene_keys::Result<Keystore> {
    let p = pin();
    Keystore::open(
        dir,
        Unlock::Pin {
            pin: &p,
            module: None,
        },
    )
}

#[test]
fn wrapped_keys_round_trip_through_the_token_and_the_root_stays_there() {
    let Some(hsm) = softhsm::softhsm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut ks = init(tmp.path(), "t-roundtrip", "alice");
    let params = ExampleParams::Test12.build().unwrap();
    let s = SessionKey::fresh(&params);
    ks.persist_session(&s).unwrap();
    assert_eq!(ks.header().backend.kind(), "pkcs11");
    drop(ks);

    let mut ks = open(tmp.path()).unwrap();
    let back = ks.load_session(&s.id_hex()).unwrap();
    assert_eq!(
        back.secret_key(&params).unwrap().seed(),
        s.secret_key(&params).unwrap().seed()
    );
    ks.rotate().unwrap();
    drop(ks);
    let ks = open(tmp.path()).unwrap();
    assert_eq!(ks.header().generation, 1);
    let back = ks.load_session(&s.id_hex()).unwrap();
    assert_eq!(
        back.secret_key(&params).unwrap().seed(),
        s.secret_key(&params).unwrap().seed()
    );

    // The root is sensitive and non-extractable: its value cannot be read.
    let root = Pkcs11Root::create(&at(&hsm.module, "t-roundtrip"), &pin(), "P", "alice").unwrap();
    assert_eq!(root.root_protection().unwrap(), (true, false));
    assert!(!root.try_export_root());
    // The same identity finds the same root: a wrap by one opens with the other.
    let mut r2 = Pkcs11Root::create(&at(&hsm.module, "t-roundtrip"), &pin(), "P", "alice").unwrap();
    let mut r1 = root;
    let k = selene_keys::KeyBytes::random();
    let w = r1.wrap(&k, b"").unwrap();
    assert_eq!(w.len(), 40, "RFC 5649 wrap of 32 bytes is 40 bytes");
    assert!(r2.unwrap(&w, b"").unwrap().ct_eq(&k));
}

#[test]
fn wrong_pin_is_refused_by_the_token() {
    let Some(_) = softhsm::softhsm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    drop(init(tmp.path(), "t-wrongpin", "bob"));
    let bad = AuthPin::from("000000");
    match Keystore::open(
        tmp.path(),
        Unlock::Pin {
            pin: &bad,
            module: None,
        },
    ) {
        Err(Error::WrongPin) => {}
        other => panic!("expected WrongPin, got {other:?}"),
    }
    let pass = Keystore::open(tmp.path(), Unlock::Passphrase(b"a passphrase"));
    assert!(matches!(pass, Err(Error::WrongUnlock { .. })));
    open(tmp.path()).unwrap();
}

#[test]
fn tampered_and_swapped_wrapped_keystore_keys_are_detected() {
    let Some(_) = softhsm::softhsm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2, d3) = (
        tmp.path().join("1"),
        tmp.path().join("2"),
        tmp.path().join("3"),
    );
    drop(init(&d1, "t-tamper", "carol"));
    drop(init(&d2, "t-tamper", "carol"));
    drop(init(&d3, "t-tamper", "dave"));
    let read = |d: &std::path::Path| std::fs::read(d.join(KEYSTORE_FILE)).unwrap();
    let (b1, b2, b3) = (read(&d1), read(&d2), read(&d3));
    // The wrapped key is the 40 bytes after its u16 length 40 (0x28 0x00), right before
    // the policy's u32 length and text ("version = ..."). Found from the policy text, not
    // by searching for 0x28 0x00, which the random policy tag or MAC can also hold.
    let wrapped = |b: &[u8]| {
        let policy = b.windows(7).position(|w| w == b"version").unwrap();
        let i = policy - 4 - 40;
        assert_eq!(b[i - 2..i], [40, 0]);
        (i, b[i..i + 40].to_vec())
    };
    let (i1, w1) = wrapped(&b1);
    let write = |bytes: &[u8]| {
        let p = d1.join(KEYSTORE_FILE);
        std::fs::write(&p, bytes).unwrap();
    };
    // A bit flip in the wrapped key: AES key wrap's integrity check fails on the token.
    let mut flipped = b1.clone();
    flipped[i1 + 7] ^= 0x10;
    write(&flipped);
    let e = open(&d1).unwrap_err();
    assert!(matches!(e, Error::Unwrap { .. }), "{e}");
    // Same root (same identity): the swapped key unwraps, the keystore MAC refuses it.
    let mut spliced = b1.clone();
    spliced[i1..i1 + 40].copy_from_slice(&wrapped(&b2).1);
    write(&spliced);
    assert!(matches!(open(&d1), Err(Error::KeystoreMac)));
    // Another identity's root: the token refuses to unwrap.
    let mut foreign = b1.clone();
    foreign[i1..i1 + 40].copy_from_slice(&wrapped(&b3).1);
    write(&foreign);
    assert!(matches!(open(&d1), Err(Error::Unwrap { .. })));
    // Truncated.
    write(&b1[..b1.len() - 5]);
    assert!(matches!(open(&d1), Err(Error::Truncated { .. })));
    write(&w1);
    assert!(open(&d1).is_err());
    write(&b1);
    open(&d1).unwrap();
}

/// Plants on the token `token` an AES-256 key labelled `label` that is extractable and
/// not sensitive (what an attacker or a careless admin could leave there), after
/// destroying any key with that label. It runs in a child process (this test binary,
/// filtered to [`plant_helper`]): SoftHSM2 in this process is driven by the keys crate,
/// and a second context here would race its sessions.
fn plant_extractable_key(token: &str, label: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "plant_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SELENE_PLANT", format!("{token}\n{label}"))
        .env("SELENE_PLANT_MODULE", &softhsm::softhsm().unwrap().module)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("planted"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child half of [`plant_extractable_key`]; does nothing without `SELENE_PLANT`.
#[test]
fn plant_helper() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    let Ok(what) = std::env::var("SELENE_PLANT") else {
        return;
    };
    let (token, label) = what.split_once('\n').unwrap();
    // The parent's token directory: its SOFTHSM2_CONF is inherited, and the module is the
    // parent's (softhsm() here would make a fresh directory).
    let module = std::env::var_os("SELENE_PLANT_MODULE").unwrap();
    let ctx = Pkcs11::new(module).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == token)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin())).unwrap();
    let existing = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap();
    for k in existing {
        session.destroy_object(k).unwrap();
    }
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .unwrap();
    drop(session);
    ctx.finalize().unwrap();
    println!("planted");
}

/// An existing key with the root's label is checked before it is used: one whose value
/// can be read off the token is refused when a keystore is created on it and when a
/// keystore whose root was swapped for it is opened.
#[test]
fn an_extractable_key_with_the_root_label_is_refused_on_create_and_open() {
    let Some(hsm) = softhsm::softhsm() else {
        return;
    };
    plant_extractable_key("t-unfit", "selene-root/mallory");
    match Pkcs11Root::create(&at(&hsm.module, "t-unfit"), &pin(), "P", "mallory") {
        Err(Error::UnfitRootKey { label, why }) => {
            assert_eq!(label, "selene-root/mallory");
            assert!(
                why.contains("extractable") && why.contains("not sensitive"),
                "{why}"
            );
        }
        other => panic!("expected UnfitRootKey, got {:?}", other.map(|_| ())),
    }

    // A good keystore whose root is later replaced by an extractable key of that label.
    let tmp = tempfile::tempdir().unwrap();
    drop(init(tmp.path(), "t-unfit", "erin"));
    open(tmp.path()).unwrap();
    plant_extractable_key("t-unfit", "selene-root/erin");
    let err = open(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::UnfitRootKey { .. }), "{err:?}");
    assert!(err.to_string().contains("extractable"), "{err}");
}
