//! A reader for GGUF files (versions 2 and 3, little-endian), the single-file model format of llama.cpp.
//!
//! Guarantees: the file is memory-mapped and every header value (counts, string and array lengths, dimensions,
//! tensor offsets and sizes) is checked with overflow-checked arithmetic against the bytes the file actually
//! holds *before* anything is allocated or sliced, so a truncated, corrupted or hostile file yields
//! [`Error::Format`] naming the file and the problem, never a panic and never an allocation sized by an
//! unchecked number (parsed metadata takes at most about 32 bytes of memory per byte of file). Tensors are
//! dequantized to `f32` by [`super::quant`] (F32, F16, BF16, F64, I8/I16/I32/I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q8_1, Q4_K, Q5_K, Q6_K; large tensors in parallel with rayon; other types give "unsupported tensor type N for
//! tensor NAME") and returned with their shape in row-major order, i.e. GGUF's innermost-first dimension list
//! reversed, as PyTorch would see it. The LLaMA mapping of names and weights is `llama::gguf`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::quant::*;
use crate::error::{Error, Result};
use cursor::Cursor;

mod cursor;
pub mod write;
pub use write::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The data alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a GGUF tensor may have.
pub const MAX_DIMS: usize = 4;
/// How deeply metadata arrays may nest (arrays of arrays ...); deeper nesting is rejected to bound recursion.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest possible encoded size of one metadata key/value pair: key length, key type, one value byte.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Smallest possible encoded size of one tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;

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
    pub(crate) fn kernel(self) -> Option<Kernel> {
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
enum FileBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// An opened, fully validated GGUF file. Tensor data stays in the file (memory-mapped) until read.
pub struct Gguf {
    path: PathBuf,
    storage: FileBytes,
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
        Gguf::parse(path.to_path_buf(), FileBytes::Mapped(map))
    }

    /// Validates a GGUF file held in memory; `name` stands for the file in error messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Gguf> {
        Gguf::parse(name.into(), FileBytes::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: FileBytes) -> Result<Gguf> {
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

    /// Takes the metadata entries whose keys start with `prefix` out of the file (a tokenizer's vocabulary,
    /// say, which then lives once, where it is used).
    pub fn take_metadata(&mut self, prefix: &str) -> BTreeMap<String, Value> {
        let keys: Vec<String> = self
            .metadata
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.metadata.remove_entry(&k))
            .collect()
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
        Ok(&self.storage.bytes()[self.tensor_range(name)?])
    }

    /// Where the bytes of the tensor called `name` are in the whole file (`as_ref()`).
    pub fn tensor_range(&self, name: &str) -> Result<std::ops::Range<usize>> {
        let info = self.info_or_err(name)?;
        let n_bytes = info.n_bytes.ok_or_else(|| self.unsupported(info))?;
        // Bounds were proven when the file was opened.
        let start = self.data_start + info.offset as usize;
        Ok(start..start + n_bytes)
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

/// The whole file's bytes (memory-mapped, or the buffer it was read from).
impl AsRef<[u8]> for Gguf {
    fn as_ref(&self) -> &[u8] {
        self.storage.bytes()
    }
}

/// Rounds `x` up to a multiple of the power of two `align`; `None` on overflow.
fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
pub(crate) mod tests;
