//! The bounds-checked reading position of the GGUF parser: every length and count is checked against the bytes
//! left before anything is read or allocated.

use super::*;

/// A bounds-checked reading position in the file.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(super) fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.path, msg)
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
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

    pub(super) fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// Checks that `n` items of at least `min_size` bytes each could fit in the rest of the file.
    pub(super) fn check_count(&self, n: u64, min_size: usize, what: &str) -> Result<usize> {
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

    pub(super) fn string(&mut self, what: &str) -> Result<&'a [u8]> {
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

    pub(super) fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
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

    pub(super) fn tensor_info(&mut self, index: usize, alignment: u64) -> Result<TensorInfo> {
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
