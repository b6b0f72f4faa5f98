//! `QuantMatrix`: a frozen weight `[rows, cols]` kept in a ggml block format (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q4_K, Q5_K, Q6_K), each row a whole number of blocks, as a GGUF file stores it. It is never expanded to a
//! full f32 copy: the kernels dequantize a panel of rows at a time (`backend::quant_linear`).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::cuda::{DeviceBuffer, Gpu};
use crate::error::{Error, Result};
use crate::io::gguf::GgmlType;
use crate::io::quant::Kernel;

/// Rows dequantized in parallel once a request holds this many elements.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// A weight `[rows, cols]` in a ggml block format. Cloning shares the blocks (and their copy on a GPU).
#[derive(Clone)]
pub struct QuantMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    kernel: Kernel,
    /// Bytes of one row: `cols / block · block_bytes`.
    row_bytes: usize,
    blocks: Blocks,
    /// Row `r` of the matrix is stored row `order[r]` of the blocks (`select_rows`); `None`: in order.
    order: Option<Arc<[u32]>>,
    /// The blocks uploaded to the GPU of the last product there (`on_gpu`).
    gpu_copy: Arc<Mutex<Option<Arc<DeviceBuffer>>>>,
}

/// Where the blocks are: a buffer of their own, or a range of bytes someone else holds (a memory-mapped
/// file: the matrix then costs no memory beyond the file's pages).
#[derive(Clone)]
enum Blocks {
    Owned(Arc<[u8]>),
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>, Range<usize>),
}

impl Blocks {
    fn bytes(&self) -> &[u8] {
        match self {
            Blocks::Owned(b) => b,
            Blocks::Shared(owner, range) => &(**owner).as_ref()[range.clone()],
        }
    }
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix({} [{}, {}])", self.ty, self.rows, self.cols)
    }
}

impl QuantMatrix {
    /// A matrix over `blocks` of `ty`, row after row; the length must be exactly that of `[rows, cols]`.
    pub fn from_blocks(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        blocks: Vec<u8>,
    ) -> Result<QuantMatrix> {
        QuantMatrix::new(ty, rows, cols, Blocks::Owned(blocks.into()))
    }

    /// A matrix over bytes `range` of `owner` (a memory-mapped GGUF file, say), shared rather than copied.
    pub fn from_shared(
        ty: GgmlType,
        [rows, cols]: [usize; 2],
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        range: Range<usize>,
    ) -> Result<QuantMatrix> {
        let len = (*owner).as_ref().len();
        if range.start > range.end || range.end > len {
            return Err(Error::Index {
                op: "quantized weight",
                msg: format!("bytes {range:?} of a buffer of {len}"),
            });
        }
        QuantMatrix::new(ty, rows, cols, Blocks::Shared(owner, range))
    }

    fn new(ty: GgmlType, rows: usize, cols: usize, blocks: Blocks) -> Result<QuantMatrix> {
        let n_bytes = blocks.bytes().len();
        let kernel = ty.kernel().filter(|_| is_block_format(ty)).ok_or_else(|| {
            Error::invalid(
                "quantized weight",
                format!("{ty} is not a block format with a kernel here"),
            )
        })?;
        let (block, block_bytes) = ty.block_layout().expect("a kernel implies a layout");
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(Error::shape(
                "quantized weight",
                format!("[{rows}, {cols}]: rows of {cols} are not whole {ty} blocks of {block}"),
            ));
        }
        let row_bytes = cols / block * block_bytes;
        if rows.checked_mul(row_bytes) != Some(n_bytes) {
            return Err(Error::shape(
                "quantized weight",
                format!("[{rows}, {cols}] in {ty} takes {rows} × {row_bytes} bytes, got {n_bytes}"),
            ));
        }
        Ok(QuantMatrix {
            ty,
            rows,
            cols,
            kernel,
            row_bytes,
            blocks,
            order: None,
            gpu_copy: Arc::default(),
        })
    }

    /// `values` (`[rows, cols]`, row-major) quantized to `ty` (see `io::quantize` for the formats written).
    pub fn quantize(values: &[f32], rows: usize, cols: usize, ty: GgmlType) -> Result<QuantMatrix> {
        crate::io::quantize::check_format(ty)?;
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::shape(
                "quantize",
                format!("{} values are not [{rows}, {cols}]", values.len()),
            ));
        }
        let block = ty.block_layout().map_or(1, |l| l.0);
        if !cols.is_multiple_of(block) {
            return Err(Error::shape(
                "quantize",
                format!("rows of {cols} are not whole {ty} blocks of {block}"),
            ));
        }
        QuantMatrix::from_blocks(ty, rows, cols, crate::io::quantize::quantize(values, ty)?)
    }

    /// The block format.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The blocks, row after row, as a GGUF file stores them (a copy when the rows were reordered).
    pub fn blocks(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.order {
            None => std::borrow::Cow::Borrowed(self.blocks.bytes()),
            Some(_) => (0..self.rows).flat_map(|r| self.row(r)).copied().collect(),
        }
    }

    /// Bytes of the blocks.
    pub fn byte_len(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// The same matrix with its rows reordered: row `i` of the result is row `order[i]` of this one. The
    /// blocks are shared, not copied (the rows are looked up through the order).
    pub fn select_rows(&self, order: &[usize]) -> Result<QuantMatrix> {
        let stored = order
            .iter()
            .map(|&r| match (r < self.rows, &self.order) {
                (false, _) => Err(Error::Index {
                    op: "quantized weight",
                    msg: format!("row {r} of a matrix of {} rows", self.rows),
                }),
                (true, Some(o)) => Ok(o[r]),
                (true, None) => u32::try_from(r)
                    .map_err(|_| Error::shape("quantized weight", format!("row {r} exceeds u32"))),
            })
            .collect::<Result<Arc<[u32]>>>()?;
        Ok(QuantMatrix {
            rows: order.len(),
            order: Some(stored),
            gpu_copy: Arc::default(),
            ..self.clone()
        })
    }

    /// Rows `rows` dequantized into `out` (`rows.len() · cols` elements), in parallel for large requests.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        assert!(
            rows.end <= self.rows && out.len() == rows.len() * self.cols,
            "internal: rows {rows:?} of {self:?} into {} elements",
            out.len()
        );
        // Tasks of whole rows, each row looked up through the order (if any) and dequantized on its own.
        let per_task = (PARALLEL_ELEMENTS / self.cols).max(1);
        let run = |(i, o): (usize, &mut [f32])| {
            for (j, o) in o.chunks_exact_mut(self.cols).enumerate() {
                (self.kernel)(self.row(rows.start + i * per_task + j), o);
            }
        };
        let tasks = per_task * self.cols;
        if out.len() >= PARALLEL_ELEMENTS {
            out.par_chunks_mut(tasks).enumerate().for_each(run);
        } else {
            out.chunks_mut(tasks).enumerate().for_each(run);
        }
    }

    /// Row `r` dequantized into `out` (`cols` elements), with the format's kernel inlined into the caller, so
    /// a caller inside `simd::vectorized` gets it compiled for AVX2.
    #[inline(always)]
    pub(crate) fn dequantize_row_inline(&self, r: usize, out: &mut [f32]) {
        use crate::io::quant::*;
        let src = self.row(r);
        match self.ty {
            GgmlType::Q8_0 => dequant_q8_0(src, out),
            GgmlType::Q4_0 => dequant_q4_0(src, out),
            GgmlType::Q4_1 => dequant_q4_1(src, out),
            GgmlType::Q5_0 => dequant_q5_0(src, out),
            GgmlType::Q5_1 => dequant_q5_1(src, out),
            GgmlType::Q4_K => dequant_q4_k(src, out),
            GgmlType::Q5_K => dequant_q5_k(src, out),
            GgmlType::Q6_K => dequant_q6_k(src, out),
            _ => (self.kernel)(src, out),
        }
    }

    /// The blocks as raw bytes on `gpu` (device `ordinal`): uploaded on first use there and kept, shared by
    /// clones, until a product on another GPU replaces them.
    pub(crate) fn on_gpu(&self, gpu: &Arc<Gpu>, ordinal: usize) -> Result<Arc<DeviceBuffer>> {
        let mut copy = self.gpu_copy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(buf) = copy.as_ref().filter(|b| b.ordinal() == ordinal) {
            return Ok(buf.clone());
        }
        // Whole f32 elements (the pool's unit), the last padded with zero bytes.
        let mut bytes = self.blocks().to_vec();
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        let buf = Arc::new(gpu.upload(crate::DType::F32, &bytes)?);
        *copy = Some(buf.clone());
        Ok(buf)
    }

    /// The blocks of row `r`.
    #[inline(always)]
    pub fn row(&self, r: usize) -> &[u8] {
        let stored = self.order.as_ref().map_or(r, |o| o[r] as usize);
        &self.blocks.bytes()[stored * self.row_bytes..(stored + 1) * self.row_bytes]
    }

    /// Every element, `[rows, cols]` row-major, in f32 (a full copy: for references, merging and export).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0..self.rows, &mut out);
        out
    }
}

/// Whether `ty` is a block quantization (more than one element per block) that [`QuantMatrix`] holds.
pub fn is_block_format(ty: GgmlType) -> bool {
    ty.kernel().is_some() && ty.block_layout().is_some_and(|(block, _)| block > 1)
}
