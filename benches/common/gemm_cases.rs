//! The GEMM shapes both GEMM benches measure, and one call of each library on them.

use tapegrad::backend::cpu::gemm::{gemm, MatRef};

/// One product `C[m × n] = A[m × k] · B[k × n]`.
pub struct Case {
    pub name: &'static str,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored `[k × m]` and read transposed.
    pub transpose_a: bool,
}

/// Square sizes 256–2048 and the `small` config's forward and weight-gradient shapes.
pub fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = [256, 512, 1024, 2048]
        .iter()
        .map(|&s| Case {
            name: "square",
            m: s,
            n: s,
            k: s,
            transpose_a: false,
        })
        .collect();
    v.push(Case {
        name: "small-fwd",
        m: 4096,
        n: 768,
        k: 256,
        transpose_a: false,
    });
    v.push(Case {
        name: "small-wgrad-At",
        m: 256,
        n: 768,
        k: 4096,
        transpose_a: true,
    });
    v
}

/// The libraries compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lib {
    Tapegrad,
    GemmCrate,
    Matrixmultiply,
    /// Ours with the products in bf16 (f32 accumulation), where the CPU has AVX512-BF16.
    TapegradBf16,
}

impl Lib {
    pub const ALL: [Lib; 3] = [Lib::Tapegrad, Lib::GemmCrate, Lib::Matrixmultiply];

    /// [`Lib::ALL`], and [`Lib::TapegradBf16`] where this CPU runs it.
    #[allow(dead_code)]
    pub fn available() -> Vec<Lib> {
        let mut libs = Lib::ALL.to_vec();
        if tapegrad::ops::cpu_bf16_available() {
            libs.push(Lib::TapegradBf16);
        }
        libs
    }

    pub fn name(self) -> &'static str {
        match self {
            Lib::Tapegrad => "tapegrad",
            Lib::GemmCrate => "gemm-crate",
            Lib::Matrixmultiply => "matrixmultiply",
            Lib::TapegradBf16 => "tapegrad-bf16",
        }
    }
}

/// Operands of one case: A, B and C, filled with small exact values.
pub struct Operands {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
}

impl Operands {
    pub fn new(case: &Case) -> Self {
        let (m, n, k) = (case.m, case.n, case.k);
        Operands {
            a: (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 13.0)
                .collect(),
            b: (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 11.0)
                .collect(),
            c: vec![0.0; m * n],
        }
    }

    /// `C = A · B` with `lib`, on `threads` threads (rayon's pool for tapegrad).
    pub fn run(&mut self, case: &Case, lib: Lib, threads: usize) {
        let (m, n, k) = (case.m, case.n, case.k);
        let (rsa, csa) = if case.transpose_a { (1, m) } else { (k, 1) };
        let (a, b, c) = (&self.a, &self.b, &mut self.c);
        match lib {
            Lib::Tapegrad | Lib::TapegradBf16 => {
                let av = MatRef {
                    data: a,
                    offset: 0,
                    row_stride: rsa,
                    col_stride: csa,
                };
                let bv = MatRef {
                    data: b,
                    offset: 0,
                    row_stride: n,
                    col_stride: 1,
                };
                tapegrad::ops::with_cpu_bf16(lib == Lib::TapegradBf16, || {
                    gemm(m, n, k, 1.0, av, bv, 0.0, c, n)
                })
            }
            // SAFETY: the pointers cover `m × k`, `k × n` and `m × n` elements with the strides given.
            Lib::GemmCrate => unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    csa as isize,
                    rsa as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                )
            },
            // SAFETY: as above.
            Lib::Matrixmultiply => unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa as isize,
                    csa as isize,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            },
        }
    }
}
