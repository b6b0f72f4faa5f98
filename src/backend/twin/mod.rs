//! CPU twins of the GPU kernels: each runs its kernel's algorithm (the same tiling, accumulation order,
//! online softmax, masking and bf16 rounding points) on the CPU, so the algorithm is tested on every CI run and
//! the GPU tests can compare a kernel with its twin.

pub mod attention;
pub mod rmsnorm;
pub mod swiglu;
