//! Element types. `DType` names what a tensor stores; `Float` is the arithmetic the CPU kernels are generic over
//! (f32 and f64). BF16 and F16 are stored with `half` and computed in f32: ops upcast them on entry and cast the
//! result back, so no kernel is written for them.

use half::{bf16, f16};

/// What a tensor stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    F64,
    BF16,
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The dtype kernels compute in: itself for f32/f64, f32 for the half types.
    pub fn compute(self) -> DType {
        match self {
            DType::F64 => DType::F64,
            _ => DType::F32,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        };
        f.write_str(name)
    }
}

/// A type a tensor can store.
pub trait Element: Copy + Send + Sync + bytemuck::Pod + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn to_f64(self) -> f64 {
                $to(self)
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}
element!(f32, F32, |x: f32| x as f64, |v: f64| v as f32);
element!(f64, F64, |x: f64| x, |v: f64| v);
element!(bf16, BF16, |x: bf16| x.to_f64(), bf16::from_f64);
element!(f16, F16, |x: f16| x.to_f64(), f16::from_f64);

/// The arithmetic of the CPU kernels: f32 and f64.
pub trait Float:
    Element
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn from_f32(v: f32) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn max(self, other: Self) -> Self;
    fn abs(self) -> Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `eˣ` for hot loops: exact for f64; for f32 a branch-free polynomial the compiler vectorizes, within
    /// 5e-7 relative of `exp` (see `fast_exp_f32`).
    fn fast_exp(self) -> Self;
}

/// `eˣ` in f32, branch-free so loops over it vectorize: `x = n · ln 2 + r` with `n` rounded by the
/// add-and-subtract-1.5·2²³ trick and `r` computed with a two-part ln 2 (Cody–Waite), then `eʳ` for
/// `|r| ≤ ln2/2` by its degree-6 Taylor polynomial (truncation below 1.2e-7) and `2ⁿ` built in the exponent
/// bits. Within 5e-7 relative of `exp`. Inputs are clamped to `[-87, 88]`, so `-∞` gives about 1.6e-38
/// rather than 0 — negligible next to any probability kept.
#[inline(always)]
pub fn fast_exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    // `t` holds round(x · log2 e) in its low mantissa bits, read back as an integer below.
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127);
    f32::from_bits(exponent << 23) * p
}

macro_rules! float {
    ($t:ty, $fast_exp:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn mul_add(self, a: Self, b: Self) -> Self {
                self * a + b
            }
            #[inline(always)]
            fn fast_exp(self) -> Self {
                $fast_exp(self)
            }
        }
    };
}
float!(f32, fast_exp_f32);
float!(f64, f64::exp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_its_documented_error() {
        let mut worst = 0.0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let exact = (x as f64).exp();
            worst = worst.max(((fast_exp_f32(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(fast_exp_f32(f32::NEG_INFINITY) < 1e-37);
    }
}
