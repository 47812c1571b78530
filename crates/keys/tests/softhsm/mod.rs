//! A throw-away SoftHSM2 for tests: a token directory in a temp dir (SOFTHSM2_CONF),
//! tokens initialised with softhsm2-util before the module is first loaded.
//!
//! When SoftHSM2 is missing the tests FAIL with the install command, unless
//! SELENE_SKIP_PKCS11=1 says to skip them (scripts/test installs the package).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Tokens every test process gets (one per test, so login states never mix).
pub const TOKENS: [&str; 5] = ["t-roundtrip", "t-wrongpin", "t-tamper", "t-cli", "t-unfit"];
/// The user PIN of every test token.
pub const PIN: &str = "246810";
const SO_PIN: &str = "13579";

const MODULES: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

pub struct SoftHsm {
    pub module: PathBuf,
    /// The SOFTHSM2_CONF file (for child processes).
    #[allow(dead_code, reason = "used by some test binaries only")]
    pub conf: PathBuf,
}

/// The shared SoftHSM2, or `None` when the user explicitly asked to skip.
pub fn softhsm() -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = std::env::var_os("SELENE_PKCS11_MODULE")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| MODULES.iter().map(PathBuf::from).find(|p| p.is_file()));
        let util_ok = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok();
        let (Some(module), true) = (module, util_ok) else {
            if std::env::var("SELENE_SKIP_PKCS11").as_deref() == Ok("1") {
                eprintln!("SELENE_SKIP_PKCS11=1: skipping the PKCS#11 tests");
                return None;
            }
            panic!(
                "SoftHSM2 (libsofthsm2.so and softhsm2-util) not found: install it with \
                 `apt-get install softhsm2` (scripts/test does this), point \
                 SELENE_PKCS11_MODULE at the module, or set SELENE_SKIP_PKCS11=1 to skip \
                 the PKCS#11 tests explicitly"
            );
        };
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        for label in TOKENS {
            let out = Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", PIN])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Set before the module is first loaded (it reads the variable at C_Initialize).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Some(SoftHsm { module, conf })
    })
    .as_ref()
}
