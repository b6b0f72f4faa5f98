//! A reader for GGUF files (versions 2 and 3, little-endian), the single-file model format of llama.cpp, and a
//! loader that turns a GGUF LLaMA checkpoint into float32 tensors under Hugging Face names.
//!
//! Guarantees: the file is memory-mapped and every header value (counts, string and array lengths, dimensions,
//! tensor offsets and sizes) is checked with overflow-checked arithmetic against the bytes the file actually
//! holds *before* anything is allocated or sliced, so a truncated, corrupted or hostile file yields
//! [`Error::Format`] naming the file and the problem, never a panic and never an allocation sized by an
//! unchecked number (parsed metadata takes at most about 32 bytes of memory per byte of file). Tensors are
//! dequantized to `f32` (F32, F16, BF16, F64, I8/I16/I32/I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K,
//! Q6_K; large tensors in parallel with rayon; other types give "unsupported tensor type N for tensor NAME")
//! and returned with their shape in row-major order, i.e. GGUF's innermost-first dimension list reversed, as
//! PyTorch would see it.
//! [`load_llama`] also undoes the row permutation that llama.cpp's converter applies to the query and key
//! projections, so the weights match the original Hugging Face checkpoint (rotate-half RoPE convention).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::llama::config::Config;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The data alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a GGUF tensor may have.
pub const MAX_DIMS: usize = 4;
/// How deeply metadata arrays may nest (arrays of arrays ...); deeper nesting is rejected to bound recursion.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// A block dequantizer: reads whole blocks from the first slice, writes their elements to the second.
type Kernel = fn(&[u8], &mut [f32]);

/// Smallest possible encoded size of one metadata key/value pair: key length, key type, one value byte.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Smallest possible encoded size of one tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;
/// Tensors with at least this many elements are dequantized in parallel.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per parallel work item when dequantizing.
const PARALLEL_CHUNK_ELEMENTS: usize = 1 << 14;

/// One metadata value. Arrays hold values of a single type, as the format requires.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// A string; bytes that are not valid UTF-8 are replaced with U+FFFD.
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The GGUF name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::F32(_) => "float32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F64(_) => "float64",
        }
    }

    /// Any integer value that is non-negative, as `u64`.
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

    /// Any integer value that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any numeric value (float or integer), as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self
                .as_i64()
                .map(|v| v as f64)
                .or_else(|| self.as_u64().map(|v| v as f64)),
        }
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A ggml tensor element type, identified by its numeric id in the file.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    /// A type id this reader does not know the layout of; such tensors can be listed but not read.
    Unknown(u32),
}

impl GgmlType {
    /// The type with numeric id `id`, as ggml numbers them.
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            other => GgmlType::Unknown(other),
        }
    }

    /// The numeric id of the type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
            GgmlType::Unknown(id) => id,
        }
    }

    /// `(elements per block, bytes per block)`, or `None` for a type whose layout is unknown here.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::BF16 => (1, 2),
            GgmlType::F64 => (1, 8),
            GgmlType::I8 => (1, 1),
            GgmlType::I16 => (1, 2),
            GgmlType::I32 => (1, 4),
            GgmlType::I64 => (1, 8),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
            GgmlType::Q8_K => (256, 292),
            GgmlType::Unknown(_) => return None,
        })
    }

    /// The block kernel that dequantizes this type, if there is one.
    fn kernel(self) -> Option<Kernel> {
        Some(match self {
            GgmlType::F32 => dequant_f32,
            GgmlType::F16 => dequant_f16,
            GgmlType::BF16 => dequant_bf16,
            GgmlType::F64 => dequant_f64,
            GgmlType::I8 => dequant_i8,
            GgmlType::I16 => dequant_i16,
            GgmlType::I32 => dequant_i32,
            GgmlType::I64 => dequant_i64,
            GgmlType::Q4_0 => dequant_q4_0,
            GgmlType::Q4_1 => dequant_q4_1,
            GgmlType::Q5_0 => dequant_q5_0,
            GgmlType::Q5_1 => dequant_q5_1,
            GgmlType::Q8_0 => dequant_q8_0,
            GgmlType::Q8_1 => dequant_q8_1,
            GgmlType::Q4_K => dequant_q4_k,
            GgmlType::Q5_K => dequant_q5_k,
            GgmlType::Q6_K => dequant_q6_k,
            _ => return None,
        })
    }

    /// Whether [`Gguf::tensor_f32`] can read tensors of this type.
    pub fn can_dequantize(self) -> bool {
        self.kernel().is_some()
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgmlType::Unknown(id) => write!(f, "{id}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Where one tensor lives in the file and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in GGUF order: innermost (fastest-varying) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data relative to the start of the data section.
    pub offset: u64,
    n_elements: usize,
    n_bytes: Option<usize>,
}

impl TensorInfo {
    /// The shape in row-major order (outermost first), as PyTorch would see it: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Every dim was checked to fit `usize` when the file was opened.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements.
    pub fn n_elements(&self) -> usize {
        self.n_elements
    }

    /// The number of data bytes, or `None` when the type's layout is unknown.
    pub fn n_bytes(&self) -> Option<usize> {
        self.n_bytes
    }
}

/// The bytes of an opened file: a memory map, or an owned buffer for in-memory files.
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An opened, fully validated GGUF file. Tensor data stays in the file (memory-mapped) until read.
pub struct Gguf {
    path: PathBuf,
    storage: Storage,
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_start: usize,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl Gguf {
    /// Opens and validates the GGUF file at `path`, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; as with any memory-mapped file, the caller must not truncate or
        // rewrite the file while it is open. Every access below is bounds-checked against the map's length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Gguf::parse(path.to_path_buf(), Storage::Mapped(map))
    }

    /// Validates a GGUF file held in memory; `name` stands for the file in error messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Gguf> {
        Gguf::parse(name.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<Gguf> {
        let bytes = storage.bytes();
        let mut cur = Cursor {
            bytes,
            pos: 0,
            path: &path,
        };
        let magic = cur.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(cur.err(format!(
                "bad magic {magic:02x?}, expected \"GGUF\"; not a gguf file"
            )));
        }
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (big-endian files are not supported)"
            } else {
                ""
            };
            return Err(cur.err(format!(
                "unsupported gguf version {version}{hint}, expected 2 or 3"
            )));
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;
        let n_kv = cur.check_count(n_kv, MIN_KV_BYTES, "metadata count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key_start = cur.pos;
            let key = cur.string("metadata key")?;
            let key = std::str::from_utf8(key)
                .map_err(|_| {
                    cur.err(format!(
                        "metadata key at byte {key_start} is not valid utf-8"
                    ))
                })?
                .to_owned();
            let ty = cur.u32("metadata value type")?;
            let value = cur.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(cur.err(format!("duplicate metadata key {key}")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(cur.err(format!(
                        "general.alignment must be a power of two, got {v:?}"
                    )))
                }
            },
        };

        let n_tensors = cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor count")?;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut by_name = HashMap::with_capacity(n_tensors);
        for index in 0..n_tensors {
            let info = cur.tensor_info(index, alignment)?;
            if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(cur.err(format!("duplicate tensor name {}", info.name)));
            }
            tensors.push(info);
        }

        let data_start = align_up(cur.pos as u64, alignment).ok_or_else(|| {
            cur.err(format!(
                "data section start overflows when aligned to {alignment}"
            ))
        })?;
        let file_len = bytes.len() as u64;
        for t in &tensors {
            let start = data_start.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes.unwrap_or(0) as u64));
            match (start, end) {
                (Some(s), Some(e)) if s <= file_len && e <= file_len => {}
                _ => {
                    return Err(cur.err(format!(
                        "tensor {}: data at offset {} (+{} bytes from the data section at byte {data_start}) \
                         lies past the end of the file ({file_len} bytes)",
                        t.name,
                        t.offset,
                        t.n_bytes.unwrap_or(0)
                    )))
                }
            }
        }
        // With tensors present the loop above proved `data_start <= file_len`; without, clamp it.
        let data_start = data_start.min(file_len) as usize;

        Ok(Gguf {
            path,
            storage,
            version,
            metadata,
            tensors,
            by_name,
            alignment,
            data_start,
        })
    }

    /// The file's path (or the name given to [`Gguf::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => conv(v).map(Some).ok_or_else(|| {
                Error::format(
                    &self.path,
                    format!(
                        "metadata key {key} holds a {}, expected {expected}",
                        v.type_name()
                    ),
                )
            }),
        }
    }

    /// A non-negative integer value; `Ok(None)` when absent, an error when of another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// A numeric value as `f64`; `Ok(None)` when absent, an error when of another type.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", Value::as_f64)
    }

    /// A boolean value; `Ok(None)` when absent, an error when of another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    /// A string value; `Ok(None)` when absent, an error when of another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }

    /// An array of strings; `Ok(None)` when absent, an error when of another type.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(Value::as_str).collect()
        })
    }

    /// An array of integers that fit `i32`; `Ok(None)` when absent, an error when of another type.
    pub fn get_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        self.typed(key, "an array of int32", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_i64().and_then(|i| i32::try_from(i).ok()))
                .collect()
        })
    }

    /// An array of numbers as `f32`; `Ok(None)` when absent, an error when of another type.
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        self.typed(key, "an array of numbers", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect()
        })
    }

    /// A non-negative integer that must be present.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get_u64(key)?
            .ok_or_else(|| Error::format(&self.path, format!("missing metadata key {key}")))
    }

    /// A number that must be present.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        self.get_f64(key)?
            .ok_or_else(|| Error::format(&self.path, format!("missing metadata key {key}")))
    }

    /// A string that must be present.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.get_str(key)?
            .ok_or_else(|| Error::format(&self.path, format!("missing metadata key {key}")))
    }

    /// Every tensor's description, in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The description of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor named {name}")))
    }

    /// The raw (possibly quantized) bytes of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info_or_err(name)?;
        let n_bytes = info.n_bytes.ok_or_else(|| self.unsupported(info))?;
        // Bounds were proven when the file was opened.
        let start = self.data_start + info.offset as usize;
        Ok(&self.storage.bytes()[start..start + n_bytes])
    }

    fn unsupported(&self, info: &TensorInfo) -> Error {
        Error::format(
            &self.path,
            format!(
                "unsupported tensor type {} for tensor {}",
                info.ggml_type, info.name
            ),
        )
    }

    /// The tensor called `name`, dequantized to `f32`, with its shape in row-major order (GGUF dims reversed:
    /// a weight with `ne = [in, out]` comes back as `[out, in]`).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.info_or_err(name)?;
        let kernel = info
            .ggml_type
            .kernel()
            .ok_or_else(|| self.unsupported(info))?;
        let src = self.tensor_bytes(name)?;
        Ok((
            info.shape(),
            dequantize(kernel, info.ggml_type, src, info.n_elements),
        ))
    }
}

/// Rounds `x` up to a multiple of the power of two `align`; `None` on overflow.
fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// A bounds-checked reading position in the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.path, msg)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated file: {what} at byte {} needs {n} bytes but only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// Checks that `n` items of at least `min_size` bytes each could fit in the rest of the file.
    fn check_count(&self, n: u64, min_size: usize, what: &str) -> Result<usize> {
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size))
            .is_some_and(|b| b <= self.remaining());
        if !fits {
            return Err(self.err(format!(
                "{what} {n} is impossible: {n} items of at least {min_size} bytes cannot fit in the {} bytes \
                 left in the file at byte {}",
                self.remaining(),
                self.pos
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8]> {
        let at = self.pos;
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => self.take(n, what),
            _ => Err(self.err(format!(
                "{what} at byte {at} has length {n}, more than the {} bytes left in the file",
                self.remaining()
            ))),
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        let what = key;
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.arr(what)?)),
            1 => Value::I8(i8::from_le_bytes(self.arr(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.arr(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => Value::Bool(self.arr::<1>(what)?[0] != 0),
            8 => Value::String(String::from_utf8_lossy(self.string(what)?).into_owned()),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!(
                        "metadata key {key}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                    )));
                }
                let elem_ty = self.u32(what)?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => {
                        return Err(self.err(format!(
                            "metadata key {key}: unknown array element type {other}"
                        )))
                    }
                };
                let n = self.u64(what)?;
                let n =
                    self.check_count(n, min_size, &format!("metadata key {key}: array length"))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.arr(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            other => {
                return Err(self.err(format!("metadata key {key}: unknown value type {other}")))
            }
        })
    }

    fn tensor_info(&mut self, index: usize, alignment: u64) -> Result<TensorInfo> {
        let at = self.pos;
        let name = self.string("tensor name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| {
                self.err(format!(
                    "name of tensor {index} at byte {at} is not valid utf-8"
                ))
            })?
            .to_owned();
        let n_dims = self.u32("tensor dimension count")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.err(format!(
                "tensor {name}: has {n_dims} dimensions, expected 1 to {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let ggml_type = GgmlType::from_id(self.u32("tensor type")?);
        let offset = self.u64("tensor offset")?;

        let n_elements = dims
            .iter()
            .try_fold(1usize, |acc, &d| {
                usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
            })
            .ok_or_else(|| {
                self.err(format!(
                    "tensor {name}: element count of dims {dims:?} overflows"
                ))
            })?;
        let n_bytes = match ggml_type.block_layout() {
            None => None,
            Some((block, block_bytes)) => {
                if dims[0] % block as u64 != 0 {
                    return Err(self.err(format!(
                        "tensor {name}: row length {} is not a multiple of the {ggml_type} block size {block}",
                        dims[0]
                    )));
                }
                let n = (n_elements / block)
                    .checked_mul(block_bytes)
                    .ok_or_else(|| {
                        self.err(format!(
                            "tensor {name}: byte size of dims {dims:?} overflows"
                        ))
                    })?;
                Some(n)
            }
        };
        if offset % alignment != 0 {
            return Err(self.err(format!(
                "tensor {name}: offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_elements,
            n_bytes,
        })
    }
}

/// Runs `kernel` over `src` to produce `n` floats, in parallel for large tensors. `src` holds exactly the
/// blocks for `n` elements (checked when the file was opened).
fn dequantize(kernel: Kernel, ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let (block, block_bytes) = ty.block_layout().unwrap_or((1, 4));
    let mut out = vec![0f32; n];
    if n >= PARALLEL_MIN_ELEMENTS {
        let blocks = (PARALLEL_CHUNK_ELEMENTS / block).max(1);
        out.par_chunks_mut(blocks * block)
            .zip(src.par_chunks(blocks * block_bytes))
            .for_each(|(dst, src)| kernel(src, dst));
    } else {
        kernel(src, &mut out);
    }
    out
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Plain little-endian elements of `N` bytes each, converted one by one.
fn dequant_plain<const N: usize>(src: &[u8], dst: &mut [f32], convert: impl Fn([u8; N]) -> f32) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(N)) {
        *d = convert(s.try_into().expect("chunks_exact yields N bytes"));
    }
}

/// F32: little-endian IEEE floats.
pub(crate) fn dequant_f32(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, f32::from_le_bytes)
}

/// F16: little-endian IEEE half floats.
pub(crate) fn dequant_f16(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| f16::from_le_bytes(b).to_f32())
}

/// BF16: little-endian bfloat16.
pub(crate) fn dequant_bf16(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| bf16::from_le_bytes(b).to_f32())
}

/// F64: little-endian doubles, rounded to f32.
pub(crate) fn dequant_f64(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| f64::from_le_bytes(b) as f32)
}

/// I8: signed bytes.
fn dequant_i8(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b: [u8; 1]| f32::from(b[0] as i8))
}

/// I16: little-endian signed 16-bit integers.
fn dequant_i16(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| f32::from(i16::from_le_bytes(b)))
}

/// I32: little-endian signed 32-bit integers (rounded to f32).
fn dequant_i32(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| i32::from_le_bytes(b) as f32)
}

/// I64: little-endian signed 64-bit integers (rounded to f32).
fn dequant_i64(src: &[u8], dst: &mut [f32]) {
    dequant_plain(src, dst, |b| i64::from_le_bytes(b) as f32)
}

/// Q8_0: blocks of 32 = f16 scale `d`, 32 × i8 `q`; `x = d·q`.
fn dequant_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (y, &q) in y.iter_mut().zip(&b[2..34]) {
            *y = d * f32::from(q as i8);
        }
    }
}

/// Q8_1: blocks of 32 = f16 scale `d`, f16 `s` (= d·Σq, unused here), 32 × i8 `q`; `x = d·q`.
fn dequant_q8_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(36).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (y, &q) in y.iter_mut().zip(&b[4..36]) {
            *y = d * f32::from(q as i8);
        }
    }
}

/// Q4_0: blocks of 32 = f16 `d`, 16 bytes of nibbles (low nibbles are elements 0..16, high nibbles 16..32);
/// `x = d·(q − 8)`.
fn dequant_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let (lo, hi) = y.split_at_mut(16);
        for (j, &q) in b[2..18].iter().enumerate() {
            lo[j] = d * (f32::from(q & 0x0f) - 8.0);
            hi[j] = d * (f32::from(q >> 4) - 8.0);
        }
    }
}

/// Q4_1: blocks of 32 = f16 `d`, f16 `m`, 16 bytes of nibbles laid out as in Q4_0; `x = d·q + m`.
fn dequant_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let (lo, hi) = y.split_at_mut(16);
        for (j, &q) in b[4..20].iter().enumerate() {
            lo[j] = d * f32::from(q & 0x0f) + m;
            hi[j] = d * f32::from(q >> 4) + m;
        }
    }
}

/// Q5_0: blocks of 32 = f16 `d`, u32 `qh` (bit j is the fifth bit of element j), 16 bytes of nibbles laid out
/// as in Q4_0; `x = d·(q − 16)`.
fn dequant_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let (lo, hi) = y.split_at_mut(16);
        for (j, &q) in b[6..22].iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            lo[j] = d * ((u32::from(q & 0x0f) | h0) as f32 - 16.0);
            hi[j] = d * ((u32::from(q >> 4) | h1) as f32 - 16.0);
        }
    }
}

/// Q5_1: blocks of 32 = f16 `d`, f16 `m`, u32 `qh`, 16 bytes of nibbles, as Q5_0; `x = d·q + m`.
fn dequant_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let (lo, hi) = y.split_at_mut(16);
        for (j, &q) in b[8..24].iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            lo[j] = d * (u32::from(q & 0x0f) | h0) as f32 + m;
            hi[j] = d * (u32::from(q >> 4) | h1) as f32 + m;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) packed in the 12 scale bytes of Q4_K / Q5_K.
fn k_scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// Q4_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
/// Each 64 elements use 32 bytes: low nibbles with sub-block 2i, high nibbles with 2i+1;
/// `x = d·sc·q − dmin·m`.
fn dequant_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = k_scale_min(2 * i, scales);
            let (sc2, m2) = k_scale_min(2 * i + 1, scales);
            let (d1, m1) = (d * sc1, dmin * m1);
            let (d2, m2) = (d * sc2, dmin * m2);
            let (lo, hi) = y.split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * f32::from(q[l] & 0x0f) - m1;
                hi[l] = d2 * f32::from(q[l] >> 4) - m2;
            }
        }
    }
}

/// Q5_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 scale bytes, 32 bytes `qh`, 128 bytes of nibbles; as
/// Q4_K, with the fifth bit of element l of 64-group i in bit 2i (low half) or 2i+1 (high half) of `qh[l]`.
fn dequant_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(176).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (i, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = k_scale_min(2 * i, scales);
            let (sc2, m2) = k_scale_min(2 * i + 1, scales);
            let (d1, m1) = (d * sc1, dmin * m1);
            let (d2, m2) = (d * sc2, dmin * m2);
            let (lo, hi) = y.split_at_mut(32);
            for l in 0..32 {
                let h1 = ((qh[l] >> (2 * i)) & 1) << 4;
                let h2 = ((qh[l] >> (2 * i + 1)) & 1) << 4;
                lo[l] = d1 * f32::from((q[l] & 0x0f) | h1) - m1;
                hi[l] = d2 * f32::from((q[l] >> 4) | h2) - m2;
            }
        }
    }
}

/// Q6_K: super-blocks of 256 = 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 × i8 scales,
/// f16 `d`; `x = d·scale·(q − 32)`, in two halves of 128 elements.
fn dequant_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 208);
        for half in 0..2 {
            let ql = &b[half * 64..half * 64 + 64];
            let qh = &b[128 + half * 32..128 + half * 32 + 32];
            let sc = &b[192 + half * 8..192 + half * 8 + 8];
            let y = &mut y[half * 128..half * 128 + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = i32::from((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i32::from((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                let s = |k: usize| d * f32::from(sc[is + k] as i8);
                y[l] = s(0) * q1 as f32;
                y[l + 32] = s(2) * q2 as f32;
                y[l + 64] = s(4) * q3 as f32;
                y[l + 96] = s(6) * q4 as f32;
            }
        }
    }
}

/// A LLaMA checkpoint read from GGUF: hyper-parameters and every tensor as `f32` under its Hugging Face name,
/// with q/k projections un-permuted (see [`load_llama`]).
#[derive(Clone)]
pub struct GgufLlama {
    /// The hyper-parameters; `tie_embeddings` is true when the file has no `output.weight`.
    pub config: Config,
    /// `(hugging face name, row-major shape, data)` for every tensor in the file, in file order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl std::fmt::Debug for GgufLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufLlama")
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufLlama {
    /// The tensor with Hugging Face name `name`.
    pub fn tensor(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, d)| (s.as_slice(), d.as_slice()))
    }
}

/// Which of llama.cpp's permuted projections a tensor is, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Permuted {
    No,
    Query,
    Key,
}

/// Maps a llama.cpp tensor name to its Hugging Face name; names it does not know are returned unchanged.
pub fn hf_name(gguf_name: &str) -> String {
    hf_name_and_permutation(gguf_name).0
}

fn hf_name_and_permutation(gguf_name: &str) -> (String, Permuted) {
    match gguf_name {
        "token_embd.weight" => return ("model.embed_tokens.weight".into(), Permuted::No),
        "output_norm.weight" => return ("model.norm.weight".into(), Permuted::No),
        "output.weight" => return ("lm_head.weight".into(), Permuted::No),
        _ => {}
    }
    let Some(rest) = gguf_name.strip_prefix("blk.") else {
        return (gguf_name.to_owned(), Permuted::No);
    };
    let Some((layer, rest)) = rest.split_once('.') else {
        return (gguf_name.to_owned(), Permuted::No);
    };
    if layer.is_empty() || !layer.bytes().all(|c| c.is_ascii_digit()) {
        return (gguf_name.to_owned(), Permuted::No);
    }
    let Some((stem, suffix)) = rest.rsplit_once('.') else {
        return (gguf_name.to_owned(), Permuted::No);
    };
    let (module, permuted) = match stem {
        "attn_norm" => ("input_layernorm", Permuted::No),
        "attn_q" => ("self_attn.q_proj", Permuted::Query),
        "attn_k" => ("self_attn.k_proj", Permuted::Key),
        "attn_v" => ("self_attn.v_proj", Permuted::No),
        "attn_output" => ("self_attn.o_proj", Permuted::No),
        "ffn_norm" => ("post_attention_layernorm", Permuted::No),
        "ffn_gate" => ("mlp.gate_proj", Permuted::No),
        "ffn_up" => ("mlp.up_proj", Permuted::No),
        "ffn_down" => ("mlp.down_proj", Permuted::No),
        _ => return (gguf_name.to_owned(), Permuted::No),
    };
    (format!("model.layers.{layer}.{module}.{suffix}"), permuted)
}

/// Undoes llama.cpp's q/k row permutation in place of a copy.
///
/// llama.cpp's converter stores the Hugging Face weight `w` of shape `[n_head·D, C]` (D = head dim) as
/// `w.reshape(n_head, 2, D/2, C).swapaxes(1, 2).reshape(n_head·D, C)`, which interleaves the two halves of
/// each head (rotate-half RoPE → llama.cpp's adjacent-pair RoPE). So stored row `h·D + 2i + j` is original row
/// `h·D + j·D/2 + i` (i < D/2, j ∈ {0, 1}); this function moves every row back. `cols` is the product of the
/// remaining dims (1 for a bias). Returns `None` when `rows` is not `n_head` heads of even size.
pub fn unpermute_qk(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if n_head == 0
        || !rows.is_multiple_of(n_head)
        || !(rows / n_head).is_multiple_of(2)
        || data.len() != rows * cols
    {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * cols;
                let dst = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    Some(out)
}

/// Opens the GGUF LLaMA checkpoint at `path` and reads it fully: see [`llama_from_gguf`].
pub fn load_llama(path: impl AsRef<Path>) -> Result<GgufLlama> {
    llama_from_gguf(&Gguf::open(path)?)
}

/// Reads a LLaMA checkpoint from an opened GGUF file: checks `general.architecture == "llama"`, reads the
/// `llama.*` hyper-parameters (`attention.head_count_kv` defaults to `head_count`, `rope.freq_base` to 1e4),
/// takes the vocabulary size from the token embedding, dequantizes every tensor to `f32` (in parallel), renames
/// it to its Hugging Face name ([`hf_name`]) and un-permutes the q and k projections ([`unpermute_qk`], with
/// `n_heads` for q and `n_kv_heads` for k). Tensors with unknown names are kept under their GGUF names.
pub fn llama_from_gguf(gguf: &Gguf) -> Result<GgufLlama> {
    let path = gguf.path();
    let fail = |msg: String| Error::format(path, msg);
    let arch = gguf.require_str("general.architecture")?;
    if arch != "llama" {
        return Err(fail(format!(
            "general.architecture is {arch:?}, expected \"llama\""
        )));
    }
    let usize_key = |key: &str| -> Result<usize> {
        let v = gguf.require_u64(key)?;
        usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            fail(format!(
                "metadata key {key} must be a positive size, got {v}"
            ))
        })
    };
    let max_seq_len = usize_key("llama.context_length")?;
    let dim = usize_key("llama.embedding_length")?;
    let n_layers = usize_key("llama.block_count")?;
    let ffn_dim = usize_key("llama.feed_forward_length")?;
    let n_heads = usize_key("llama.attention.head_count")?;
    let n_kv_heads = match gguf.get_u64("llama.attention.head_count_kv")? {
        None => n_heads,
        Some(_) => usize_key("llama.attention.head_count_kv")?,
    };
    if n_heads % n_kv_heads != 0 {
        return Err(fail(format!(
            "llama.attention.head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
        )));
    }
    let rope_theta = gguf.get_f64("llama.rope.freq_base")?.unwrap_or(1e4);
    let norm_eps = gguf.require_f64("llama.attention.layer_norm_rms_epsilon")?;
    if !(rope_theta.is_finite() && rope_theta > 0.0 && norm_eps.is_finite() && norm_eps >= 0.0) {
        return Err(fail(format!(
            "bad rope.freq_base {rope_theta} or layer_norm_rms_epsilon {norm_eps}"
        )));
    }

    let embd = gguf
        .tensor_info("token_embd.weight")
        .ok_or_else(|| fail("missing tensor token_embd.weight".into()))?;
    let embd_shape = embd.shape();
    if embd_shape.len() != 2 || embd_shape[1] != dim {
        return Err(fail(format!(
            "token_embd.weight has shape {embd_shape:?}, expected [vocab, {dim}]"
        )));
    }
    let vocab_size = embd_shape[0];
    let tie_embeddings = gguf.tensor_info("output.weight").is_none();

    let tensors = gguf
        .tensor_infos()
        .par_iter()
        .map(|info| {
            let (shape, data) = gguf.tensor_f32(&info.name)?;
            let (name, permuted) = hf_name_and_permutation(&info.name);
            let heads = match permuted {
                Permuted::No => return Ok((name, shape, data)),
                Permuted::Query => n_heads,
                Permuted::Key => n_kv_heads,
            };
            let rows = shape.first().copied().unwrap_or(1);
            let cols = shape.iter().skip(1).product::<usize>();
            let data = unpermute_qk(&data, rows, cols, heads).ok_or_else(|| {
                fail(format!(
                    "tensor {}: shape {shape:?} does not split into {heads} heads of even size",
                    info.name
                ))
            })?;
            Ok((name, shape, data))
        })
        .collect::<Result<Vec<_>>>()?;

    let config = Config {
        vocab_size,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        ffn_dim,
        max_seq_len,
        norm_eps,
        rope_theta,
        tie_embeddings,
    };
    Ok(GgufLlama { config, tensors })
}

#[cfg(test)]
// Reference checks index element by element on purpose, mirroring the format descriptions.
#[allow(clippy::needless_range_loop)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A minimal GGUF writer for building test files.
    pub(crate) struct Writer {
        pub version: u32,
        pub alignment: usize,
        pub kvs: Vec<(String, Value)>,
        /// `(name, ggml dims innermost first, type id, raw bytes)`.
        pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.extend(x.to_le_bytes()),
            Value::I8(x) => out.extend(x.to_le_bytes()),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(u8::from(*x)),
            Value::String(s) => put_str(out, s),
            Value::Array(items) => {
                out.extend(items.first().map_or(0, type_id).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    put_value(out, item);
                }
            }
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
        }
    }

    impl Writer {
        pub fn new() -> Writer {
            Writer {
                version: 3,
                alignment: 32,
                kvs: Vec::new(),
                tensors: Vec::new(),
            }
        }

        pub fn kv(&mut self, key: &str, v: Value) -> &mut Writer {
            self.kvs.push((key.to_owned(), v));
            self
        }

        pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, bytes: Vec<u8>) -> &mut Writer {
            self.tensors
                .push((name.to_owned(), dims.to_vec(), ty, bytes));
            self
        }

        pub fn to_bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend(b"GGUF");
            out.extend(self.version.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kvs.len() as u64).to_le_bytes());
            for (k, v) in &self.kvs {
                put_str(&mut out, k);
                out.extend(type_id(v).to_le_bytes());
                put_value(&mut out, v);
            }
            let mut offset = 0usize;
            for (name, dims, ty, bytes) in &self.tensors {
                put_str(&mut out, name);
                out.extend((dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend(d.to_le_bytes());
                }
                out.extend(ty.to_le_bytes());
                out.extend((offset as u64).to_le_bytes());
                offset = (offset + bytes.len()).next_multiple_of(self.alignment);
            }
            out.resize(out.len().next_multiple_of(self.alignment), 0);
            for (_, _, _, bytes) in &self.tensors {
                out.extend(bytes);
                out.resize(out.len().next_multiple_of(self.alignment), 0);
            }
            out
        }
    }

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// Writes `bytes` to a fresh temporary file and returns its path.
    pub(crate) fn temp_file(bytes: &[u8]) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tapegrad-gguf-test-{}-{n}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn open_bytes(bytes: &[u8]) -> Result<Gguf> {
        let path = temp_file(bytes);
        let r = Gguf::open(&path);
        std::fs::remove_file(&path).unwrap();
        r
    }

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    fn f32_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Packs 32 nibbles (0..16) in the Q4 layout: byte j holds element j (low) and element j+16 (high).
    fn pack_nibbles(q: &[u8]) -> Vec<u8> {
        (0..16).map(|j| q[j] | (q[j + 16] << 4)).collect()
    }

    fn q8_0_block(d: f32, q: &[i8]) -> Vec<u8> {
        let mut b = h(d).to_vec();
        b.extend(q.iter().map(|&x| x as u8));
        b
    }

    fn q4_0_block(d: f32, q: &[u8]) -> Vec<u8> {
        let mut b = h(d).to_vec();
        b.extend(pack_nibbles(q));
        b
    }

    fn q4_1_block(d: f32, m: f32, q: &[u8]) -> Vec<u8> {
        let mut b = h(d).to_vec();
        b.extend(h(m));
        b.extend(pack_nibbles(q));
        b
    }

    fn run(kernel: Kernel, src: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        kernel(src, &mut out);
        out
    }

    #[test]
    fn dequant_plain_types() {
        let xs = [1.5f32, -2.0, 0.0, 3.25e-3];
        assert_eq!(run(dequant_f32, &f32_bytes(&xs), 4), xs);
        let f16s: Vec<u8> = xs.iter().flat_map(|&x| h(x)).collect();
        let back = run(dequant_f16, &f16s, 4);
        for (a, b) in back.iter().zip(xs) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-3));
        }
        let bf: Vec<u8> = [1.5f32, -2.0, 0.0, 256.0]
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(run(dequant_bf16, &bf, 4), [1.5, -2.0, 0.0, 256.0]);
        let f64s: Vec<u8> = [0.5f64, -7.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(run(dequant_f64, &f64s, 2), [0.5, -7.0]);
        assert_eq!(run(dequant_i8, &[0xff, 5], 2), [-1.0, 5.0]);
        assert_eq!(run(dequant_i16, &(-300i16).to_le_bytes(), 1), [-300.0]);
        assert_eq!(run(dequant_i32, &(70000i32).to_le_bytes(), 1), [70000.0]);
        assert_eq!(run(dequant_i64, &(-9i64).to_le_bytes(), 1), [-9.0]);
    }

    #[test]
    fn dequant_q8_0_block() {
        let q: Vec<i8> = (0..32).map(|j| (j * 7 - 100) as i8).collect();
        let mut src = q8_0_block(0.5, &q);
        src.extend(q8_0_block(-2.0, &q));
        let out = run(dequant_q8_0, &src, 64);
        for j in 0..32 {
            assert_eq!(out[j], 0.5 * f32::from(q[j]));
            assert_eq!(out[32 + j], -2.0 * f32::from(q[j]));
        }
    }

    #[test]
    fn dequant_q8_1_block() {
        let q: Vec<i8> = (0..32).map(|j| (j * 5 - 80) as i8).collect();
        let mut src = h(0.25).to_vec();
        src.extend(h(123.0));
        src.extend(q.iter().map(|&x| x as u8));
        let out = run(dequant_q8_1, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.25 * f32::from(q[j]));
        }
    }

    #[test]
    fn dequant_q4_0_block() {
        let q: Vec<u8> = (0..32).map(|j| ((j * 5) % 16) as u8).collect();
        let src = q4_0_block(0.25, &q);
        assert_eq!(src.len(), 18);
        let out = run(dequant_q4_0, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.25 * (f32::from(q[j]) - 8.0), "element {j}");
        }
    }

    #[test]
    fn dequant_q4_1_block() {
        let q: Vec<u8> = (0..32).map(|j| ((j * 3 + 1) % 16) as u8).collect();
        let src = q4_1_block(0.5, -1.0, &q);
        assert_eq!(src.len(), 20);
        let out = run(dequant_q4_1, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.5 * f32::from(q[j]) - 1.0, "element {j}");
        }
    }

    fn q5_qh(q: &[u8]) -> [u8; 4] {
        let mut qh = 0u32;
        for (j, &x) in q.iter().enumerate() {
            qh |= u32::from(x >> 4) << j;
        }
        qh.to_le_bytes()
    }

    #[test]
    fn dequant_q5_blocks() {
        let q: Vec<u8> = (0..32).map(|j| ((j * 11 + 3) % 32) as u8).collect();
        let nibbles: Vec<u8> = q.iter().map(|x| x & 15).collect();
        let mut src = h(0.5).to_vec();
        src.extend(q5_qh(&q));
        src.extend(pack_nibbles(&nibbles));
        let out = run(dequant_q5_0, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.5 * (f32::from(q[j]) - 16.0), "q5_0 element {j}");
        }
        let mut src = h(0.25).to_vec();
        src.extend(h(2.0));
        src.extend(q5_qh(&q));
        src.extend(pack_nibbles(&nibbles));
        let out = run(dequant_q5_1, &src, 32);
        for j in 0..32 {
            assert_eq!(out[j], 0.25 * f32::from(q[j]) + 2.0, "q5_1 element {j}");
        }
    }

    /// Packs eight 6-bit scales and mins into the 12-byte K-quant layout.
    fn pack_k_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
        }
        s
    }

    /// Sub-block (of 32) and byte position of element `e` of a Q4_K / Q5_K super-block, and whether it is the
    /// high nibble.
    fn k_position(e: usize) -> (usize, usize, bool) {
        let group = e / 64;
        let high = e % 64 >= 32;
        (2 * group + usize::from(high), 32 * group + e % 32, high)
    }

    #[test]
    fn dequant_q4_k_block() {
        let sc = [1u8, 63, 17, 32, 5, 48, 60, 33];
        let m = [0u8, 62, 31, 16, 47, 2, 63, 20];
        let q: Vec<u8> = (0..256).map(|e| ((e * 7 + e / 16) % 16) as u8).collect();
        let mut qs = [0u8; 128];
        for e in 0..256 {
            let (_, byte, high) = k_position(e);
            qs[byte] |= if high { q[e] << 4 } else { q[e] };
        }
        let mut src = h(0.5).to_vec();
        src.extend(h(0.125));
        src.extend(pack_k_scales(&sc, &m));
        src.extend(qs);
        assert_eq!(src.len(), 144);
        let out = run(dequant_q4_k, &src, 256);
        for e in 0..256 {
            let (sub, _, _) = k_position(e);
            let want = 0.5 * f32::from(sc[sub]) * f32::from(q[e]) - 0.125 * f32::from(m[sub]);
            assert_eq!(out[e], want, "element {e}");
        }
    }

    #[test]
    fn dequant_q5_k_block() {
        let sc = [3u8, 9, 63, 0, 40, 41, 12, 7];
        let m = [5u8, 1, 0, 63, 22, 33, 44, 55];
        let q: Vec<u8> = (0..256).map(|e| ((e * 13 + e / 8) % 32) as u8).collect();
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        for e in 0..256 {
            let (sub, byte, high) = k_position(e);
            let nib = q[e] & 15;
            qs[byte] |= if high { nib << 4 } else { nib };
            qh[e % 32] |= (q[e] >> 4) << sub;
        }
        let mut src = h(0.25).to_vec();
        src.extend(h(0.5));
        src.extend(pack_k_scales(&sc, &m));
        src.extend(qh);
        src.extend(qs);
        assert_eq!(src.len(), 176);
        let out = run(dequant_q5_k, &src, 256);
        for e in 0..256 {
            let (sub, _, _) = k_position(e);
            let want = 0.25 * f32::from(sc[sub]) * f32::from(q[e]) - 0.5 * f32::from(m[sub]);
            assert_eq!(out[e], want, "element {e}");
        }
    }

    #[test]
    fn dequant_q6_k_block() {
        let scales: Vec<i8> = (0..16).map(|i| (i * 9 - 70) as i8).collect();
        let q: Vec<u8> = (0..256).map(|e| ((e * 29 + 5) % 64) as u8).collect();
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for e in 0..256 {
            let (half, r) = (e / 128, e % 128);
            let (quarter, l) = (r / 32, r % 32);
            let lo_byte = half * 64 + l + if quarter % 2 == 1 { 32 } else { 0 };
            let nib = q[e] & 15;
            ql[lo_byte] |= if quarter >= 2 { nib << 4 } else { nib };
            qh[half * 32 + l] |= (q[e] >> 4) << (2 * quarter);
        }
        let mut src = ql.to_vec();
        src.extend(qh);
        src.extend(scales.iter().map(|&s| s as u8));
        src.extend(h(0.5));
        assert_eq!(src.len(), 210);
        let out = run(dequant_q6_k, &src, 256);
        for e in 0..256 {
            let (half, r) = (e / 128, e % 128);
            let (quarter, l) = (r / 32, r % 32);
            let s = scales[half * 8 + l / 16 + 2 * quarter];
            let want = 0.5 * f32::from(s) * (f32::from(q[e]) - 32.0);
            assert_eq!(out[e], want, "element {e}");
        }
    }

    /// A small valid file with metadata of every type and one tensor of each main type.
    pub(crate) fn sample_writer() -> Writer {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("test".into()))
            .kv("a.u8", Value::U8(7))
            .kv("a.i8", Value::I8(-7))
            .kv("a.u16", Value::U16(700))
            .kv("a.i16", Value::I16(-700))
            .kv("a.u32", Value::U32(70000))
            .kv("a.i32", Value::I32(-70000))
            .kv("a.f32", Value::F32(0.5))
            .kv("a.bool", Value::Bool(true))
            .kv("a.u64", Value::U64(1 << 40))
            .kv("a.i64", Value::I64(-(1 << 40)))
            .kv("a.f64", Value::F64(1e-300))
            .kv(
                "a.strings",
                Value::Array(vec![
                    Value::String("héllo".into()),
                    Value::String(String::new()),
                    Value::String("Ġworld".into()),
                ]),
            )
            .kv(
                "a.ints",
                Value::Array(vec![Value::I32(1), Value::I32(-2), Value::I32(3)]),
            )
            .kv(
                "a.nested",
                Value::Array(vec![
                    Value::Array(vec![Value::U8(1), Value::U8(2)]),
                    Value::Array(vec![Value::U8(3)]),
                ]),
            )
            .kv("a.empty", Value::Array(vec![]));
        let f: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        w.tensor("t.f32", &[3, 2], 0, f32_bytes(&f));
        let f16s: Vec<u8> = f.iter().flat_map(|&x| h(x)).collect();
        w.tensor("t.f16", &[2, 3], 1, f16s);
        let q8: Vec<i8> = (0..32).map(|j| j as i8 - 16).collect();
        let mut q8_bytes = q8_0_block(0.5, &q8);
        q8_bytes.extend(q8_0_block(1.0, &q8));
        w.tensor("t.q8_0", &[32, 2], 8, q8_bytes);
        let q4: Vec<u8> = (0..32).map(|j| (j % 16) as u8).collect();
        w.tensor("t.q4_0", &[32], 2, q4_0_block(2.0, &q4));
        w.tensor("t.q4_1", &[32, 1], 3, q4_1_block(0.5, 1.0, &q4));
        w
    }

    #[test]
    fn round_trip_metadata_and_tensors() {
        let w = sample_writer();
        let g = open_bytes(&w.to_bytes()).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.metadata().len(), w.kvs.len());
        for (k, v) in &w.kvs {
            assert_eq!(g.get(k), Some(v), "key {k}");
        }
        assert_eq!(g.get_u64("a.u8").unwrap(), Some(7));
        assert_eq!(g.get_u64("a.u64").unwrap(), Some(1 << 40));
        assert!(g.get_u64("a.i8").is_err());
        assert_eq!(g.get_f64("a.f32").unwrap(), Some(0.5));
        assert_eq!(g.get_bool("a.bool").unwrap(), Some(true));
        assert_eq!(g.get_str("general.architecture").unwrap(), Some("test"));
        assert_eq!(g.get_str("missing").unwrap(), None);
        assert!(g.require_str("missing").is_err());
        assert_eq!(
            g.get_str_array("a.strings").unwrap().unwrap(),
            ["héllo", "", "Ġworld"]
        );
        assert_eq!(g.get_i32_array("a.ints").unwrap().unwrap(), [1, -2, 3]);
        assert!(g.get_str_array("a.ints").is_err());

        let names: Vec<&str> = g.tensor_infos().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t.f32", "t.f16", "t.q8_0", "t.q4_0", "t.q4_1"]);
        let f: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        assert_eq!(g.tensor_f32("t.f32").unwrap(), (vec![2, 3], f.clone()));
        assert_eq!(g.tensor_f32("t.f16").unwrap(), (vec![3, 2], f));
        let (shape, q8) = g.tensor_f32("t.q8_0").unwrap();
        assert_eq!(shape, [2, 32]);
        for j in 0..32 {
            assert_eq!(q8[j], 0.5 * (j as f32 - 16.0));
            assert_eq!(q8[32 + j], j as f32 - 16.0);
        }
        let (shape, q4) = g.tensor_f32("t.q4_0").unwrap();
        assert_eq!(shape, [32]);
        for j in 0..32 {
            assert_eq!(q4[j], 2.0 * ((j % 16) as f32 - 8.0));
        }
        let (shape, q41) = g.tensor_f32("t.q4_1").unwrap();
        assert_eq!(shape, [1, 32]);
        for j in 0..32 {
            assert_eq!(q41[j], 0.5 * (j % 16) as f32 + 1.0);
        }
        assert!(matches!(g.tensor_f32("nope"), Err(Error::Format { .. })));
        assert_eq!(g.tensor_bytes("t.q4_0").unwrap().len(), 18);
    }

    #[test]
    fn version_2_and_custom_alignment() {
        let mut w = sample_writer();
        w.version = 2;
        w.alignment = 64;
        w.kv("general.alignment", Value::U32(64));
        let g = open_bytes(&w.to_bytes()).unwrap();
        assert_eq!((g.version(), g.alignment()), (2, 64));
        assert_eq!(g.tensor_f32("t.q4_1").unwrap().1[0], 1.0);
    }

    #[test]
    fn large_tensor_dequantizes_in_parallel_identically() {
        let n_blocks = PARALLEL_MIN_ELEMENTS / 32 * 3 + 5;
        let mut src = Vec::new();
        for b in 0..n_blocks {
            let q: Vec<u8> = (0..32).map(|j| ((j + b) % 16) as u8).collect();
            src.extend(q4_1_block(b as f32 / 64.0, -0.5, &q));
        }
        let n = n_blocks * 32;
        let par = dequantize(dequant_q4_1, GgmlType::Q4_1, &src, n);
        assert_eq!(par, run(dequant_q4_1, &src, n));
    }

    fn assert_format_error(bytes: &[u8], needle: &str) {
        match open_bytes(bytes) {
            Err(Error::Format { msg, .. }) => {
                assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
            }
            Err(e) => panic!("expected a format error, got {e}"),
            Ok(_) => panic!("expected a format error containing {needle:?}, got a file"),
        }
    }

    /// Byte position just past the first occurrence of `needle`.
    fn find(bytes: &[u8], needle: &[u8]) -> usize {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
            + needle.len()
    }

    #[test]
    fn truncated_files_are_format_errors() {
        let bytes = sample_writer().to_bytes();
        // Cut inside the header and the tensor data; every cut must be reported, never panic.
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            match Gguf::from_bytes("cut.gguf", cut.to_vec()) {
                Err(Error::Format { .. }) => {}
                Err(e) => panic!("cut at {len}: expected a format error, got {e}"),
                Ok(_) => {
                    // Only cuts inside trailing padding after the last tensor's data may still be valid.
                    let g = Gguf::from_bytes("full.gguf", bytes.clone()).unwrap();
                    let last = g.tensor_infos().last().unwrap();
                    let end = g.data_start + last.offset as usize + last.n_bytes().unwrap();
                    assert!(len >= end, "cut at {len} accepted");
                }
            }
        }
        assert_format_error(&bytes[..10], "truncated file");
        assert_format_error(&bytes[..bytes.len() - 40], "past the end of the file");
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = sample_writer().to_bytes();
        bytes[0] = b'X';
        assert_format_error(&bytes, "bad magic");
        let mut bytes = sample_writer().to_bytes();
        bytes[4..8].copy_from_slice(&4u32.to_le_bytes());
        assert_format_error(&bytes, "unsupported gguf version 4");
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert_format_error(&bytes, "big-endian");
    }

    #[test]
    fn tensor_offset_past_end() {
        let bytes = sample_writer().to_bytes();
        // The offset field of the last tensor follows its type id; patch it to far away (but aligned).
        let at = find(&bytes, b"t.q4_1") + 4 + 16 + 4;
        let mut bad = bytes.clone();
        bad[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert_format_error(&bad, "tensor t.q4_1: data at offset 1048576");
        bad[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
        assert_format_error(&bad, "past the end of the file");
        bad[at..at + 8].copy_from_slice(&3u64.to_le_bytes());
        assert_format_error(&bad, "not a multiple of the alignment");
    }

    #[test]
    fn huge_lengths_and_counts() {
        let bytes = sample_writer().to_bytes();
        // Array length of a.strings.
        let at = find(&bytes, b"a.strings") + 4 + 4;
        let mut bad = bytes.clone();
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_format_error(&bad, "array length");
        bad[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_format_error(&bad, "array length");
        // String length of general.architecture's value.
        let at = find(&bytes, b"general.architecture") + 4;
        let mut bad = bytes.clone();
        bad[at..at + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert_format_error(&bad, "has length");
        // Key length.
        let mut bad = bytes.clone();
        bad[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
        assert_format_error(&bad, "has length");
        // Tensor and metadata counts.
        let mut bad = bytes.clone();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_format_error(&bad, "tensor count");
        let mut bad = bytes.clone();
        bad[16..24].copy_from_slice(&(1u64 << 33).to_le_bytes());
        assert_format_error(&bad, "metadata count");
        // Dims whose product overflows.
        let at = find(&bytes, b"t.f32") + 4;
        let mut bad = bytes.clone();
        bad[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        bad[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_format_error(&bad, "overflows");
        // Dims whose data would not fit.
        bad[at + 8..at + 16].copy_from_slice(&1u64.to_le_bytes());
        assert_format_error(&bad, "past the end of the file");
        // Too many dims.
        let mut bad = bytes.clone();
        bad[at - 4..at].copy_from_slice(&9u32.to_le_bytes());
        assert_format_error(&bad, "has 9 dimensions");
        // Quantized row not a multiple of the block.
        let at = find(&bytes, b"t.q4_0") + 4;
        let mut bad = bytes.clone();
        bad[at..at + 8].copy_from_slice(&31u64.to_le_bytes());
        assert_format_error(&bad, "not a multiple of the Q4_0 block size 32");
    }

    #[test]
    fn other_malformed_metadata() {
        let mut w = Writer::new();
        w.kv("k", Value::U8(1)).kv("k", Value::U8(2));
        assert_format_error(&w.to_bytes(), "duplicate metadata key k");
        let mut w = Writer::new();
        w.kv("general.alignment", Value::U32(24));
        assert_format_error(&w.to_bytes(), "power of two");
        let mut nested = Value::U8(0);
        for _ in 0..=MAX_ARRAY_DEPTH {
            nested = Value::Array(vec![nested]);
        }
        let mut w = Writer::new();
        w.kv("deep", nested);
        assert_format_error(&w.to_bytes(), "nested deeper");
        let mut bytes = Writer::new().kv("x", Value::U8(1)).to_bytes();
        let at = find(&bytes, b"x");
        bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        assert_format_error(&bytes, "unknown value type 99");
        let mut w = Writer::new();
        w.tensor("a", &[1], 0, vec![0; 4])
            .tensor("a", &[1], 0, vec![0; 4]);
        assert_format_error(&w.to_bytes(), "duplicate tensor name a");
    }

    #[test]
    fn unknown_tensor_type_is_listed_but_not_read() {
        let mut w = Writer::new();
        w.tensor("iq", &[256], 19, vec![0; 64]);
        let g = open_bytes(&w.to_bytes()).unwrap();
        assert_eq!(g.tensor_infos()[0].ggml_type, GgmlType::Unknown(19));
        match g.tensor_f32("iq") {
            Err(Error::Format { msg, .. }) => {
                assert_eq!(msg, "unsupported tensor type 19 for tensor iq")
            }
            other => panic!("expected an unsupported-type error, got {other:?}"),
        }
        let mut w = Writer::new();
        w.tensor("q2", &[256], 10, vec![0; 84]);
        let g = open_bytes(&w.to_bytes()).unwrap();
        assert!(g.tensor_f32("q2").is_err());
    }

    #[test]
    fn missing_file_is_io_error() {
        assert!(matches!(
            Gguf::open("/nonexistent/dir/model.gguf"),
            Err(Error::Io { .. })
        ));
    }

    /// llama.cpp's permutation, as its converter writes it, for checking the inverse.
    fn permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
        let d = rows / n_head;
        let mut out = vec![0f32; w.len()];
        // out.reshape(n_head, D/2, 2, C)[h, i, j] = w.reshape(n_head, 2, D/2, C)[h, j, i]
        for hd in 0..n_head {
            for i in 0..d / 2 {
                for j in 0..2 {
                    let dst = (hd * d + i * 2 + j) * cols;
                    let src = (hd * d + j * (d / 2) + i) * cols;
                    out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (rows, cols, n_head) = (12, 5, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let p = permute(&w, rows, cols, n_head);
        assert_ne!(p, w);
        // Head 0, D = 4: stored rows are original rows 0, 2, 1, 3.
        assert_eq!(&p[cols..2 * cols], &w[2 * cols..3 * cols]);
        assert_eq!(unpermute_qk(&p, rows, cols, n_head).unwrap(), w);
        assert!(unpermute_qk(&p, rows, cols, 5).is_none());
        assert!(unpermute_qk(&p, rows, cols, 12).is_none());
    }

    #[test]
    fn hf_names() {
        assert_eq!(hf_name("token_embd.weight"), "model.embed_tokens.weight");
        assert_eq!(hf_name("output.weight"), "lm_head.weight");
        assert_eq!(hf_name("output_norm.weight"), "model.norm.weight");
        assert_eq!(
            hf_name("blk.12.attn_norm.weight"),
            "model.layers.12.input_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.0.attn_output.weight"),
            "model.layers.0.self_attn.o_proj.weight"
        );
        assert_eq!(
            hf_name("blk.3.ffn_norm.weight"),
            "model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.3.ffn_down.weight"),
            "model.layers.3.mlp.down_proj.weight"
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), "blk.x.attn_q.weight");
        assert_eq!(hf_name("rope_freqs.weight"), "rope_freqs.weight");
    }

    /// A two-layer llama checkpoint with F32 weights whose values encode their HF row index.
    fn tiny_llama(tied: bool) -> (Writer, Vec<f32>, Vec<f32>) {
        let (dim, heads, kv_heads, ffn, vocab) = (8usize, 2usize, 1usize, 16usize, 10usize);
        let head_dim = dim / heads;
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("llama".into()))
            .kv("llama.context_length", Value::U32(64))
            .kv("llama.embedding_length", Value::U32(dim as u32))
            .kv("llama.block_count", Value::U32(2))
            .kv("llama.feed_forward_length", Value::U32(ffn as u32))
            .kv("llama.attention.head_count", Value::U32(heads as u32))
            .kv("llama.attention.head_count_kv", Value::U32(kv_heads as u32))
            .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        let mat = |rows: usize, cols: usize, base: f32| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| base + (i / cols) as f32 + (i % cols) as f32 / 100.0)
                .collect()
        };
        let q = mat(dim, dim, 1000.0);
        let k = mat(kv_heads * head_dim, dim, 2000.0);
        w.tensor(
            "token_embd.weight",
            &[dim as u64, vocab as u64],
            0,
            f32_bytes(&mat(vocab, dim, 0.0)),
        );
        for l in 0..2 {
            let t = |n: &str| format!("blk.{l}.{n}.weight");
            w.tensor(
                &t("attn_norm"),
                &[dim as u64],
                0,
                f32_bytes(&vec![1.0; dim]),
            );
            w.tensor(
                &t("attn_q"),
                &[dim as u64, dim as u64],
                0,
                f32_bytes(&permute(&q, dim, dim, heads)),
            );
            w.tensor(
                &t("attn_k"),
                &[dim as u64, (kv_heads * head_dim) as u64],
                0,
                f32_bytes(&permute(&k, kv_heads * head_dim, dim, kv_heads)),
            );
            w.tensor(
                &t("attn_v"),
                &[dim as u64, (kv_heads * head_dim) as u64],
                0,
                f32_bytes(&k),
            );
            w.tensor(
                &t("attn_output"),
                &[dim as u64, dim as u64],
                0,
                f32_bytes(&q),
            );
            w.tensor(&t("ffn_norm"), &[dim as u64], 0, f32_bytes(&vec![1.0; dim]));
            for n in ["ffn_gate", "ffn_up"] {
                w.tensor(
                    &t(n),
                    &[dim as u64, ffn as u64],
                    0,
                    f32_bytes(&mat(ffn, dim, 0.0)),
                );
            }
            w.tensor(
                &t("ffn_down"),
                &[ffn as u64, dim as u64],
                0,
                f32_bytes(&mat(dim, ffn, 0.0)),
            );
        }
        w.tensor(
            "output_norm.weight",
            &[dim as u64],
            0,
            f32_bytes(&vec![1.0; dim]),
        );
        if !tied {
            w.tensor(
                "output.weight",
                &[dim as u64, vocab as u64],
                0,
                f32_bytes(&mat(vocab, dim, 0.0)),
            );
        }
        (w, q, k)
    }

    #[test]
    fn load_tiny_llama() {
        for tied in [true, false] {
            let (w, q, k) = tiny_llama(tied);
            let path = temp_file(&w.to_bytes());
            let m = load_llama(&path);
            std::fs::remove_file(&path).unwrap();
            let m = m.unwrap();
            assert_eq!(
                (
                    m.config.vocab_size,
                    m.config.dim,
                    m.config.n_layers,
                    m.config.n_heads,
                    m.config.n_kv_heads,
                    m.config.ffn_dim
                ),
                (10, 8, 2, 2, 1, 16)
            );
            assert_eq!((m.config.max_seq_len, m.config.rope_theta), (64, 1e4));
            assert!((m.config.norm_eps - 1e-5).abs() < 1e-10);
            assert_eq!(m.config.tie_embeddings, tied);
            assert_eq!(m.tensors.len(), 1 + 2 * 9 + 1 + usize::from(!tied));
            let (shape, data) = m.tensor("model.layers.1.self_attn.q_proj.weight").unwrap();
            assert_eq!((shape, data), (&[8usize, 8][..], &q[..]));
            let (shape, data) = m.tensor("model.layers.0.self_attn.k_proj.weight").unwrap();
            assert_eq!((shape, data), (&[4usize, 8][..], &k[..]));
            let (shape, _) = m.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
            assert_eq!(shape, [8, 16]);
            assert_eq!(m.tensor("model.embed_tokens.weight").unwrap().0, [10, 8]);
            assert_eq!(m.tensor("lm_head.weight").is_some(), !tied);
        }
    }

    #[test]
    fn load_llama_rejects_other_architectures() {
        let (mut w, _, _) = tiny_llama(true);
        w.kvs[0].1 = Value::String("gpt2".into());
        let path = temp_file(&w.to_bytes());
        let r = load_llama(&path);
        std::fs::remove_file(&path).unwrap();
        match r {
            Err(Error::Format { msg, .. }) => assert!(msg.contains("expected \"llama\""), "{msg}"),
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn mutated_files_never_panic(
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8),
            cut in proptest::option::of(0usize..4096),
        ) {
            let mut bytes = sample_writer().to_bytes();
            for (at, b) in edits {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            if let Some(cut) = cut {
                let n = bytes.len();
                bytes.truncate(cut % n);
            }
            let path = temp_file(&bytes);
            let opened = Gguf::open(&path);
            std::fs::remove_file(&path).unwrap();
            if let Ok(g) = opened {
                for info in g.tensor_infos() {
                    let _ = g.tensor_f32(&info.name);
                }
            }
        }
    }

    #[test]
    fn smollm2_real_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            println!(
                "skipping: {} is absent (run scripts/fetch-models.sh)",
                path.display()
            );
            return;
        }
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.tensor_infos().len(), 272);
        let t0 = std::time::Instant::now();
        let m = load_llama(&path).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        println!("load_llama(SmolLM2-135M Q4_1): {secs:.3} s");
        assert_eq!(
            (
                m.config.n_layers,
                m.config.dim,
                m.config.ffn_dim,
                m.config.n_heads,
                m.config.n_kv_heads
            ),
            (30, 576, 1536, 9, 3)
        );
        assert_eq!((m.config.vocab_size, m.config.max_seq_len), (49152, 8192));
        assert_eq!(m.config.rope_theta, 1e5);
        assert!((m.config.norm_eps - 1e-5).abs() < 1e-9);
        assert!(m.config.tie_embeddings);
        assert_eq!(m.tensors.len(), 272);
        assert_eq!(
            m.tensor("model.embed_tokens.weight").unwrap().0,
            [49152, 576]
        );
        assert_eq!(
            m.tensor("model.layers.29.self_attn.k_proj.weight")
                .unwrap()
                .0,
            [192, 576]
        );
        assert_eq!(
            m.tensor("model.layers.0.mlp.down_proj.weight").unwrap().0,
            [576, 1536]
        );
        for (name, _, data) in &m.tensors {
            assert!(
                data.iter().all(|x| x.is_finite()),
                "{name} has non-finite values"
            );
        }
        let norm = m.tensor("model.norm.weight").unwrap().1;
        assert!(norm.iter().any(|&x| x != 0.0));
    }
}
