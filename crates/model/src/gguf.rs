//! GGUF reader (versions 2 and 3): header, metadata of every value type, tensor index.
//!
//! [`Gguf::parse`] holds the whole file in memory; [`Gguf::read_selected`] reads the
//! header and index and then only the chosen tensors' bytes (one seek and read each),
//! which is how a client loads its bundle without the layer matrices. Tensor data stays
//! quantized and is borrowed by the weights. Header, metadata and tensor index are read through
//! `selene_codec::Reader`: every length in the file is checked against fixed caps and
//! the bytes left before anything is allocated, and no input makes this panic.
//! Format: ggml's `docs/gguf.md` (little-endian; strings are a u64 length plus UTF-8).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use selene_codec::Reader;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The file's first four bytes.
const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest metadata string or tensor name accepted.
const MAX_STRING: usize = 1 << 24;
/// Most elements in one metadata array.
const MAX_ARRAY: usize = 1 << 24;
/// Most tensors or metadata entries.
const MAX_ENTRIES: usize = 1 << 20;
/// Most tensor dimensions (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u64 = 4;
/// Deepest nesting of arrays inside arrays.
const MAX_DEPTH: usize = 4;
/// First read of [`Gguf::read_selected`]; a header longer than what was read is read on
/// to twice the length, so at most twice the header is read (SmolLM2's header and
/// index, tokenizer tables included, are 1.8 MB: 2 MiB read).
const FIRST_HEADER_READ: u64 = 256 << 10;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: elements of one type, possibly arrays themselves.
    Array(Vec<Value>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            // Hyper-parameters are far below 2^53, where this is exact.
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as a bool, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// A ggml tensor element type: how many elements one block holds and its byte size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    /// The ggml type id.
    pub id: u32,
    /// The ggml name (`Q4_1`, ...).
    pub name: &'static str,
    /// Elements per block.
    pub block_len: usize,
    /// Bytes per block.
    pub block_bytes: usize,
}

/// The ggml types whose block layout this reader knows (ggml.h `ggml_type`).
const GGML_TYPES: [GgmlType; 20] = [
    GgmlType::new(0, "F32", 1, 4),
    GgmlType::new(1, "F16", 1, 2),
    GgmlType::new(2, "Q4_0", 32, 18),
    GgmlType::new(3, "Q4_1", 32, 20),
    GgmlType::new(6, "Q5_0", 32, 22),
    GgmlType::new(7, "Q5_1", 32, 24),
    GgmlType::new(8, "Q8_0", 32, 34),
    GgmlType::new(9, "Q8_1", 32, 36),
    GgmlType::new(10, "Q2_K", 256, 84),
    GgmlType::new(11, "Q3_K", 256, 110),
    GgmlType::new(12, "Q4_K", 256, 144),
    GgmlType::new(13, "Q5_K", 256, 176),
    GgmlType::new(14, "Q6_K", 256, 210),
    GgmlType::new(15, "Q8_K", 256, 292),
    GgmlType::new(24, "I8", 1, 1),
    GgmlType::new(25, "I16", 1, 2),
    GgmlType::new(26, "I32", 1, 4),
    GgmlType::new(27, "I64", 1, 8),
    GgmlType::new(28, "F64", 1, 8),
    GgmlType::new(30, "BF16", 1, 2),
];

impl GgmlType {
    const fn new(id: u32, name: &'static str, block_len: usize, block_bytes: usize) -> Self {
        GgmlType {
            id,
            name,
            block_len,
            block_bytes,
        }
    }

    /// The type with this id, if ggml defines it and this reader knows its layout.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }

    /// ggml type 0.
    pub const F32: GgmlType = GGML_TYPES[0];
    /// ggml type 1.
    pub const F16: GgmlType = GGML_TYPES[1];
    /// ggml type 3.
    pub const Q4_1: GgmlType = GGML_TYPES[3];
    /// ggml type 8.
    pub const Q8_0: GgmlType = GGML_TYPES[6];
    /// ggml type 6.
    pub const Q5_0: GgmlType = GGML_TYPES[4];
    /// ggml type 12.
    pub const Q4_K: GgmlType = GGML_TYPES[10];
    /// ggml type 14.
    pub const Q6_K: GgmlType = GGML_TYPES[12];
}

/// One entry of the tensor index.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous).
    pub dims: Vec<u64>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
    /// Byte length of the data.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().map_or(1, |&d| d as usize)
    }

    /// Number of rows (product of the other dimensions).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A parsed GGUF file: metadata, tensor index and the tensor data it holds (all of it
/// after [`Gguf::parse`], the selected tensors after [`Gguf::read_selected`]).
pub struct Gguf {
    version: u32,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_offset: usize,
    /// Length of the header and tensor index.
    index_len: usize,
    /// SHA-256 of the header and tensor index (the file's bytes before the data).
    index_sha256: [u8; 32],
    /// The whole file, or the selected tensors' data back to back.
    bytes: Vec<u8>,
    /// Where each tensor's data starts in `bytes`; `None` when it was not read.
    located: Vec<Option<usize>>,
    /// Bytes of the file read to build this value.
    bytes_read: u64,
    /// The file's length.
    file_len: u64,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("bytes", &self.bytes.len())
            .field("bytes_read", &self.bytes_read)
            .field("file_len", &self.file_len)
            .finish()
    }
}

/// Header, metadata and tensor index, parsed from the file's first bytes.
struct Index {
    version: u32,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    /// Where the index ends (the bytes it was parsed from).
    end: usize,
    alignment: u64,
}

impl Index {
    /// Parses the header and tensor index at the start of `bytes`, which may be a prefix
    /// of the file: a prefix too short yields [`Error::Truncated`].
    fn parse(bytes: &[u8]) -> Result<Index> {
        let mut r = Reader::new(bytes);
        let version = r.header(&MAGIC, 2u32..=3)?;
        // Each item takes at least one byte: no allocation follows a lie.
        let n_tensors = r.count_u64("tensor count", MAX_ENTRIES, 1)?;
        let n_kv = r.count_u64("metadata count", MAX_ENTRIES, 1)?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = read_string(&mut r)?;
            let type_id = r.u32("value type")?;
            let value = read_value(&mut r, type_id, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(Error::Duplicate { name: key });
            }
        }
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for _ in 0..n_tensors {
            let info = read_tensor_info(&mut r)?;
            if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(Error::Duplicate { name: info.name });
            }
            tensors.push(info);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 16 => a,
                _ => {
                    return Err(Error::WrongType {
                        key: "general.alignment",
                        expected: "a power of two up to 65536",
                    })
                }
            },
        };
        Ok(Index {
            version,
            metadata,
            tensors,
            by_name,
            end: r.offset(),
            alignment,
        })
    }

    /// Where the data section starts.
    fn data_offset(&self) -> u64 {
        (self.end as u64).div_ceil(self.alignment) * self.alignment
    }

    /// Checks that every tensor is aligned and lies inside a file of `file_len` bytes.
    fn check_ranges(&self, file_len: u64) -> Result<()> {
        let data_offset = self.data_offset();
        let data_len = file_len.saturating_sub(data_offset);
        for t in &self.tensors {
            if t.offset % self.alignment != 0 {
                return Err(Error::BadTensor {
                    name: t.name.clone(),
                    reason: "data offset is not a multiple of the alignment",
                });
            }
            if t.offset.saturating_add(t.n_bytes as u64) > data_len {
                return Err(Error::Truncated {
                    offset: data_offset.saturating_add(t.offset) as usize,
                    needed: t.n_bytes,
                    left: data_len.saturating_sub(t.offset) as usize,
                    what: "tensor data",
                });
            }
        }
        Ok(())
    }

    /// The parsed file, holding `bytes` with each tensor's data at `located`, after
    /// reading `bytes_read` bytes of a `file_len`-byte file whose index hashes to
    /// `index_sha256`.
    fn into_gguf(
        self,
        index_sha256: [u8; 32],
        bytes: Vec<u8>,
        located: Vec<Option<usize>>,
        bytes_read: u64,
        file_len: u64,
    ) -> Gguf {
        Gguf {
            version: self.version,
            data_offset: self.data_offset() as usize,
            index_len: self.end,
            metadata: self.metadata,
            tensors: self.tensors,
            by_name: self.by_name,
            index_sha256,
            bytes,
            located,
            bytes_read,
            file_len,
        }
    }
}

impl Gguf {
    /// Reads and parses a GGUF file.
    ///
    /// # Errors
    /// I/O errors on `path`, and every parse error of [`Gguf::parse`].
    pub fn read(path: &Path) -> Result<Gguf> {
        let bytes = crate::pages::read(path).map_err(|e| Error::io(path, e))?;
        Gguf::parse(bytes)
    }

    /// Parses GGUF bytes, keeping them for the tensor data.
    ///
    /// # Errors
    /// Bad magic, an unsupported version, truncation, oversized lengths, unknown value or
    /// tensor types, duplicate names, or tensor data outside the file.
    pub fn parse(bytes: Vec<u8>) -> Result<Gguf> {
        let index = Index::parse(&bytes)?;
        let file_len = bytes.len() as u64;
        index.check_ranges(file_len)?;
        let data_offset = index.data_offset() as usize;
        let located = index
            .tensors
            .iter()
            .map(|t| Some(data_offset + t.offset as usize))
            .collect();
        let index_sha256 = Sha256::digest(&bytes[..index.end]).into();
        Ok(index.into_gguf(index_sha256, bytes, located, file_len, file_len))
    }

    /// Reads the header and tensor index of the GGUF file at `path`, then only the data
    /// of the tensors `keep` selects (one seek and read per tensor); the others stay on
    /// disk and [`Gguf::tensor_data`] refuses them with [`Error::NotLoaded`].
    ///
    /// # Errors
    /// I/O errors on `path` and the parse errors of [`Gguf::parse`].
    pub fn read_selected(path: &Path, keep: &dyn Fn(&TensorInfo) -> bool) -> Result<Gguf> {
        Gguf::read_selected_from(path, keep, FIRST_HEADER_READ)
    }

    /// [`Gguf::read_selected`] whose first header read is `first_read` bytes.
    fn read_selected_from(
        path: &Path,
        keep: &dyn Fn(&TensorInfo) -> bool,
        first_read: u64,
    ) -> Result<Gguf> {
        let io = |e| Error::io(path, e);
        let mut f = File::open(path).map_err(io)?;
        let file_len = f.metadata().map_err(io)?.len();
        // Read a prefix and parse; a header longer than the prefix shows as truncation,
        // so read twice as much until it parses or the file ends.
        let mut head = Vec::new();
        let mut want = first_read.max(1).min(file_len);
        let index = loop {
            let had = head.len();
            head.resize(want as usize, 0);
            f.read_exact(&mut head[had..]).map_err(io)?;
            match Index::parse(&head) {
                Ok(index) => break index,
                Err(Error::Truncated { .. }) if want < file_len => {
                    want = want.saturating_mul(2).min(file_len);
                }
                Err(e) => return Err(e),
            }
        };
        index.check_ranges(file_len)?;
        let data_offset = index.data_offset();
        // Every range lies inside the file (checked above), so the total is bounded too.
        let total: usize = index
            .tensors
            .iter()
            .filter(|t| keep(t))
            .map(|t| t.n_bytes)
            .sum();
        let mut bytes = Vec::with_capacity(total);
        let mut located = vec![None; index.tensors.len()];
        for (t, at) in index.tensors.iter().zip(located.iter_mut()) {
            if !keep(t) {
                continue;
            }
            f.seek(SeekFrom::Start(data_offset + t.offset))
                .map_err(io)?;
            let start = bytes.len();
            bytes.resize(start + t.n_bytes, 0);
            f.read_exact(&mut bytes[start..]).map_err(io)?;
            *at = Some(start);
        }
        let index_sha256 = Sha256::digest(&head[..index.end]).into();
        let bytes_read = head.len() as u64 + bytes.len() as u64;
        Ok(index.into_gguf(index_sha256, bytes, located, bytes_read, file_len))
    }

    /// A copy holding only the data of the tensors `keep` selects (metadata and index
    /// whole), as [`Gguf::read_selected`] would read them; its [`Gguf::bytes_read`]
    /// counts the index and the data it holds.
    pub fn select(&self, keep: &dyn Fn(&TensorInfo) -> bool) -> Gguf {
        let mut bytes = Vec::new();
        let mut located = vec![None; self.tensors.len()];
        let mut data = 0u64;
        for (i, t) in self.tensors.iter().enumerate() {
            if let (true, Some(src)) = (keep(t), self.data_at(i)) {
                located[i] = Some(bytes.len());
                bytes.extend_from_slice(src);
                data += t.n_bytes as u64;
            }
        }
        Gguf {
            version: self.version,
            metadata: self.metadata.clone(),
            tensors: self.tensors.clone(),
            by_name: self.by_name.clone(),
            data_offset: self.data_offset,
            index_len: self.index_len,
            index_sha256: self.index_sha256,
            bytes,
            located,
            bytes_read: self.index_len as u64 + data,
            file_len: self.file_len,
        }
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata value under `key`.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// All metadata keys, unordered.
    pub fn metadata_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.keys().map(String::as_str)
    }

    /// The tensor index in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Where the data section starts in the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// The index entry of a tensor.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when the file has no tensor of that name.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
            })
    }

    /// The index of a tensor in [`Gguf::tensors`].
    ///
    /// # Errors
    /// [`Error::MissingTensor`].
    pub fn tensor_index(&self, name: &str) -> Result<usize> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
            })
    }

    /// A tensor's raw (possibly quantized) bytes.
    ///
    /// # Errors
    /// [`Error::MissingTensor`], [`Error::NotLoaded`] when this value was read without it.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let i = self.tensor_index(name)?;
        self.data_at(i).ok_or_else(|| Error::NotLoaded {
            name: name.to_string(),
        })
    }

    /// The data of the `i`-th tensor of the index, if this value holds it.
    pub fn data_at(&self, i: usize) -> Option<&[u8]> {
        let start = (*self.located.get(i)?)?;
        let t = self.tensors.get(i)?;
        // Every located range was checked or copied whole when it was read.
        self.bytes.get(start..start + t.n_bytes)
    }

    /// The tensor data held: the whole file after [`Gguf::parse`], the selected
    /// tensors' data back to back after [`Gguf::read_selected`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of the file read to build this value (the whole file, or the header and
    /// index plus the selected tensors).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// SHA-256 of the file's header and tensor index (magic, version, metadata, and
    /// every tensor's name, shape, type and offset).
    pub fn index_sha256(&self) -> [u8; 32] {
        self.index_sha256
    }
}

fn read_string(r: &mut Reader<'_>) -> Result<String> {
    Ok(r.str_u64("string", MAX_STRING)?.to_string())
}

fn read_value(r: &mut Reader<'_>, type_id: u32, depth: usize) -> Result<Value> {
    Ok(match type_id {
        0 => Value::U8(r.u8("u8")?),
        1 => Value::I8(i8::from_le_bytes(r.array("i8")?)),
        2 => Value::U16(r.u16("u16")?),
        3 => Value::I16(i16::from_le_bytes(r.array("i16")?)),
        4 => Value::U32(r.u32("u32")?),
        5 => Value::I32(i32::from_le_bytes(r.array("i32")?)),
        6 => Value::F32(r.f32("f32")?),
        7 => {
            let at = r.offset();
            match r.u8("bool")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::TooLarge {
                        what: "bool",
                        offset: at,
                        value: b.into(),
                        limit: 1,
                    })
                }
            }
        }
        8 => Value::String(read_string(r)?),
        9 => {
            if depth >= MAX_DEPTH {
                return Err(Error::TooLarge {
                    what: "array nesting depth",
                    offset: r.offset(),
                    value: depth as u64 + 1,
                    limit: MAX_DEPTH as u64,
                });
            }
            let elem = r.u32("array element type")?;
            let n = r.count_u64("array length", MAX_ARRAY, 1)?;
            // Grow with the elements actually read, not the announced count.
            let mut items = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                items.push(read_value(r, elem, depth + 1)?);
            }
            Value::Array(items)
        }
        10 => Value::U64(r.u64("u64")?),
        11 => Value::I64(r.i64("i64")?),
        12 => Value::F64(r.f64("f64")?),
        other => {
            return Err(Error::UnknownValueType {
                type_id: other,
                offset: r.offset() - 4,
            })
        }
    })
}

fn read_tensor_info(r: &mut Reader<'_>) -> Result<TensorInfo> {
    let name = read_string(r)?;
    let at = r.offset();
    let n_dims = r.u32("tensor dimension count")? as u64;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(Error::TooLarge {
            what: "tensor dimension count",
            offset: at,
            value: n_dims,
            limit: MAX_DIMS,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut elems: u64 = 1;
    for _ in 0..n_dims {
        let at = r.offset();
        let d = r.u64("tensor dimension")?;
        elems = elems
            .checked_mul(d)
            .filter(|&e| e <= 1 << 40)
            .ok_or(Error::TooLarge {
                what: "tensor element count",
                offset: at,
                value: d,
                limit: 1 << 40,
            })?;
        dims.push(d);
    }
    let type_id = r.u32("tensor type")?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| Error::UnknownTensorType {
        type_id,
        name: name.clone(),
    })?;
    if dims[0] % ggml_type.block_len as u64 != 0 {
        return Err(Error::BadTensor {
            name,
            reason: "row length is not a multiple of the type's block length",
        });
    }
    let offset = r.u64("tensor offset")?;
    let n_bytes = (elems / ggml_type.block_len as u64) * ggml_type.block_bytes as u64;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes: n_bytes as usize,
    })
}

#[cfg(test)]
#[path = "gguf_tests.rs"]
mod tests;
