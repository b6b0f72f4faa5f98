//! A GGUF v3 writer: metadata key/values, then tensor infos (name, dimensions innermost first, type, offset),
//! then the tensor data, each tensor aligned to `general.alignment` (32). The file is written atomically
//! (a temporary file in the same folder, then a rename), streaming the tensors, so a failure leaves no partial
//! file. What it writes, [`super::Gguf`] reads back unchanged (tested), and llama.cpp loads.

use super::{GgmlType, Value, DEFAULT_ALIGNMENT};
use crate::error::{Error, Result};
use std::path::Path;

/// A GGUF file being put together; see the module docs.
#[derive(Default)]
pub struct GgufWriter {
    kvs: Vec<(String, Value)>,
    /// `(name, dims innermost first, type, bytes)`.
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

/// GGUF's id of a value's type.
pub(crate) fn type_id(v: &Value) -> u32 {
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

/// Appends a GGUF string: its length (u64) and bytes.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Appends a value (without its type id); an array gets its element type (that of its first element, u8
/// when empty) and length first.
pub(crate) fn put_value(out: &mut Vec<u8>, v: &Value) {
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

/// A GGUF header of `version`: magic, counts, the metadata and the tensor infos (`(name, dims innermost
/// first, type id, byte length)`, each tensor's offset the previous one's end rounded up to `alignment`),
/// padded to `alignment`.
pub(crate) fn header<'a>(
    version: u32,
    alignment: usize,
    kvs: &[(String, Value)],
    tensors: impl ExactSizeIterator<Item = (&'a str, &'a [u64], u32, usize)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(super::GGUF_MAGIC);
    out.extend(version.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        out.extend(type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    for (name, dims, ty, len) in tensors {
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = (offset + len).next_multiple_of(alignment);
    }
    out.resize(out.len().next_multiple_of(alignment), 0);
    out
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata key (replacing an earlier value of the same key).
    pub fn kv(&mut self, key: &str, value: Value) -> &mut GgufWriter {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor: `shape` row-major (as PyTorch sees it; stored innermost first), `bytes` its data in
    /// `ty`, which must be exactly the size the shape and type call for.
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let elements: usize = shape.iter().product();
        let expected = ty
            .block_layout()
            .filter(|&(block, _)| elements.is_multiple_of(block))
            .map(|(block, block_bytes)| elements / block * block_bytes);
        if expected != Some(bytes.len()) || shape.is_empty() || shape.len() > super::MAX_DIMS {
            return Err(Error::invalid(
                "gguf writer",
                format!(
                    "tensor {name}: {} bytes of {ty} do not fit shape {shape:?}",
                    bytes.len()
                ),
            ));
        }
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.to_owned(), dims, ty, bytes));
        Ok(())
    }

    /// The header: magic, version 3, counts, metadata and tensor infos, padded to the alignment.
    fn header(&self) -> Vec<u8> {
        let infos = self
            .tensors
            .iter()
            .map(|(name, dims, ty, bytes)| (name.as_str(), dims.as_slice(), ty.id(), bytes.len()));
        header(3, DEFAULT_ALIGNMENT as usize, &self.kvs, infos)
    }

    /// Writes the file to `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let align = DEFAULT_ALIGNMENT as usize;
        crate::io::write_file_atomically(path, |w| {
            w.write_all(&self.header())?;
            for (_, _, _, bytes) in &self.tensors {
                w.write_all(bytes)?;
                let pad = bytes.len().next_multiple_of(align) - bytes.len();
                w.write_all(&vec![0u8; pad])?;
            }
            Ok(())
        })
    }
}
