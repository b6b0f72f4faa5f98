//! Shapes, strides and numpy broadcasting. A `Layout` is a shape, strides (in elements; 0 for a broadcast dim)
//! and an offset into a storage buffer, so views (transpose, narrow, broadcast) cost no copy.

use crate::error::{Error, Result};

/// Shape + strides + offset of a tensor over its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Layout {
    /// This layout broadcast to `shape` (new leading dims and expanded size-1 dims get stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for (d, s) in strides.iter_mut().enumerate().skip(extra) {
            let src = d - extra;
            *s = if self.shape[src] == shape[d] {
                self.strides[src]
            } else {
                0
            };
        }
        Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        }
    }

    /// The row-major layout of `shape` at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the elements lie row-major with no gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&dim, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// Storage offset of every element, in row-major order of the logical index.
    pub fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.numel();
        let ndim = self.shape.len();
        let mut index = vec![0usize; ndim];
        let mut offset = self.offset;
        (0..n).map(move |i| {
            if i > 0 {
                for d in (0..ndim).rev() {
                    index[d] += 1;
                    offset += self.strides[d];
                    if index[d] < self.shape[d] {
                        break;
                    }
                    offset -= self.strides[d] * self.shape[d];
                    index[d] = 0;
                }
            }
            offset
        })
    }

    /// Storage offset of the first element of row `row`, where rows are the flattened leading dims (all but
    /// the last).
    pub fn row_offset(&self, mut row: usize) -> usize {
        let ndim = self.shape.len();
        let mut offset = self.offset;
        for d in (0..ndim.saturating_sub(1)).rev() {
            let size = self.shape[d];
            offset += (row % size) * self.strides[d];
            row /= size;
        }
        offset
    }
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// The numpy broadcast of two shapes, or an error naming `op` and both shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let ndim = a.len().max(b.len());
    let mut out = vec![0; ndim];
    for i in 0..ndim {
        let da = if i + a.len() >= ndim {
            a[i + a.len() - ndim]
        } else {
            1
        };
        let db = if i + b.len() >= ndim {
            b[i + b.len() - ndim]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    format!("shapes {a:?} and {b:?} cannot be broadcast"),
                ))
            }
        };
    }
    Ok(out)
}

/// Normalizes a possibly negative axis for a tensor of `ndim` dims.
pub fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        return Err(Error::Index {
            op,
            msg: format!("axis {axis} is out of range for {ndim} dims"),
        });
    }
    Ok(a as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_and_offsets() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
        let l = Layout {
            shape: vec![2, 3],
            strides: vec![1, 2],
            offset: 1,
        };
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![1, 3, 5, 2, 4, 6]);
        assert_eq!(l.row_offset(1), 2);
        assert!(!l.is_contiguous());
        assert!(Layout::contiguous(&[2, 1, 3]).is_contiguous());
    }
}
