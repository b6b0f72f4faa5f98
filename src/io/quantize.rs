//! Quantization of `f32` rows into ggml blocks: Q8_0, Q4_0 and Q4_1, laid out exactly as `io::quant` reads
//! them back (and as ggml writes them), so a quantized weight can be saved in a GGUF file unchanged.
//!
//! Each block of 32 elements gets its own scale: Q8_0 `d = max|x| / 127`, `q = round(x / d)`; Q4_0 takes the
//! element of largest magnitude `v` and `d = v / −8`, `q = clamp(round(x / d) + 8, 0, 15)`; Q4_1 spans
//! `[min, max]` with `d = (max − min) / 15`, `q = clamp(round((x − min) / d), 0, 15)`.

use half::f16;

use super::gguf::GgmlType;
use crate::error::{Error, Result};

/// The block formats [`quantize`] writes.
pub const QUANTIZABLE: [GgmlType; 3] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1];

/// `values` (a whole number of 32-element blocks) as blocks of `ty`.
pub fn quantize(values: &[f32], ty: GgmlType) -> Result<Vec<u8>> {
    check_format(ty)?;
    let (block, bytes) = ty.block_layout().unwrap_or((1, 0));
    let kernel: fn(&[f32], &mut [u8]) = match ty {
        GgmlType::Q8_0 => quantize_q8_0,
        GgmlType::Q4_0 => quantize_q4_0,
        _ => quantize_q4_1,
    };
    if !values.len().is_multiple_of(block) {
        return Err(Error::invalid(
            "quantize",
            format!(
                "{} values are not a whole number of {ty} blocks of {block}",
                values.len()
            ),
        ));
    }
    let mut out = vec![0u8; values.len() / block * bytes];
    for (x, b) in values.chunks_exact(block).zip(out.chunks_exact_mut(bytes)) {
        kernel(x, b);
    }
    Ok(out)
}

/// `Ok` when [`quantize`] writes `ty`, else an error naming the formats it writes.
pub fn check_format(ty: GgmlType) -> Result<()> {
    if QUANTIZABLE.contains(&ty) {
        Ok(())
    } else {
        Err(Error::invalid(
            "quantize",
            format!(
                "cannot quantize to {ty}: the formats written are {}",
                names(&QUANTIZABLE)
            ),
        ))
    }
}

/// `q8_0, q4_0, …`: the names of `types` as flags spell them.
pub fn names(types: &[GgmlType]) -> String {
    let names: Vec<String> = types.iter().map(|t| t.to_string().to_lowercase()).collect();
    names.join(", ")
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Nibbles `q[0..32]` packed as ggml does: byte j holds element j (low) and element j + 16 (high).
fn pack_nibbles(q: &[u8; 32], out: &mut [u8]) {
    for j in 0..16 {
        out[j] = q[j] | (q[j + 16] << 4);
    }
}

fn quantize_q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    for (q, &v) in b[2..34].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

fn quantize_q4_0(x: &[f32], b: &mut [u8]) {
    let max = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    let q: [u8; 32] = std::array::from_fn(|j| ((x[j] * id + 8.5) as u8).min(15));
    pack_nibbles(&q, &mut b[2..18]);
}

fn quantize_q4_1(x: &[f32], b: &mut [u8]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    let q: [u8; 32] = std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as u8).min(15));
    pack_nibbles(&q, &mut b[4..20]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::quant::{dequant_q4_0, dequant_q4_1, dequant_q8_0};

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) / 7.0)
            .collect()
    }

    fn round_trip(ty: GgmlType, kernel: fn(&[u8], &mut [f32]), x: &[f32]) -> Vec<f32> {
        let blocks = quantize(x, ty).unwrap();
        assert_eq!(blocks.len(), x.len() / 32 * ty.block_layout().unwrap().1);
        let mut out = vec![0f32; x.len()];
        kernel(&blocks, &mut out);
        out
    }

    /// The worst error of each block is at most half a step (plus the f16 rounding of the scale).
    fn check_error(x: &[f32], y: &[f32], step: impl Fn(&[f32]) -> f32) {
        for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
            let half_step = step(xb) / 2.0;
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= half_step * 1.01 + 1e-3 * a.abs(),
                    "{a} came back as {b}"
                );
            }
        }
    }

    #[test]
    fn q8_0_is_within_half_a_step() {
        let x = ramp(96);
        let y = round_trip(GgmlType::Q8_0, dequant_q8_0, &x);
        check_error(&x, &y, |b| {
            b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0
        });
    }

    #[test]
    fn q4_0_is_within_half_a_step_and_keeps_the_extreme() {
        let x = ramp(64);
        let y = round_trip(GgmlType::Q4_0, dequant_q4_0, &x);
        // The end opposite the extreme is clamped at 7 steps, so it may be a whole step off.
        check_error(&x, &y, |b| b.iter().fold(0f32, |m, v| m.max(v.abs())) / 4.0);
        // The first element of largest magnitude is exactly −8 steps.
        let i = (0..32).fold(0, |m, j| if x[j].abs() > x[m].abs() { j } else { m });
        assert!((x[i] - y[i]).abs() <= 1e-3 * x[i].abs());
    }

    #[test]
    fn q4_1_spans_min_to_max() {
        let x: Vec<f32> = ramp(64).iter().map(|v| v + 3.0).collect();
        let y = round_trip(GgmlType::Q4_1, dequant_q4_1, &x);
        check_error(&x, &y, |b| {
            let (lo, hi) = b
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            (hi - lo) / 15.0
        });
    }

    #[test]
    fn zeros_stay_zero_and_odd_lengths_are_refused() {
        for (ty, kernel) in [
            (GgmlType::Q8_0, dequant_q8_0 as fn(&[u8], &mut [f32])),
            (GgmlType::Q4_0, dequant_q4_0),
            (GgmlType::Q4_1, dequant_q4_1),
        ] {
            assert_eq!(round_trip(ty, kernel, &[0.0; 32]), [0.0; 32]);
            let err = quantize(&[1.0; 33], ty).unwrap_err().to_string();
            assert!(err.contains("33 values"), "{err}");
        }
        let err = quantize(&[1.0; 256], GgmlType::Q6_K)
            .unwrap_err()
            .to_string();
        assert!(err.contains("q8_0, q4_0, q4_1"), "{err}");
    }
}
