//! Kernel sources and their compilation by NVRTC: each family (`kernels/<family>.cu`, with `common.cuh`
//! inlined) is compiled once per process and architecture into PTX of ISA ≤ 9.0 (NVRTC 13.0), which a CUDA 13.0
//! driver loads. The kernel gate (`scripts/kernel-gate.sh`) compiles every family through this same function
//! on a machine without a GPU and assembles the PTX with ptxas.

use crate::error::{Error, Result};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::path::PathBuf;

/// The GPU architectures kernels are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// A100 (compute capability 8.x).
    Sm80,
    /// H100 / H200 (compute capability 9.0).
    Sm90,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90];

    /// The virtual architecture NVRTC compiles for.
    pub fn compute(self) -> &'static str {
        match self {
            Arch::Sm80 => "compute_80",
            Arch::Sm90 => "compute_90",
        }
    }

    /// The real architecture ptxas assembles for.
    pub fn sm(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }

    /// The architecture to build for a device of compute capability `major.minor`.
    pub fn for_capability(major: i32, minor: i32) -> Result<Arch> {
        match major {
            9.. => Ok(Arch::Sm90),
            8 => Ok(Arch::Sm80),
            _ => Err(Error::Device {
                op: "cuda",
                msg: format!(
                    "compute capability {major}.{minor} is below 8.0; the kernels need sm_80 or newer"
                ),
            }),
        }
    }
}

const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Every kernel family: name and source.
pub const FAMILIES: &[(&str, &str)] = &[
    ("adamw", include_str!("../../../kernels/adamw.cu")),
    ("attention", include_str!("../../../kernels/attention.cu")),
    ("binary", include_str!("../../../kernels/binary.cu")),
    ("copy", include_str!("../../../kernels/copy.cu")),
    ("dequant", include_str!("../../../kernels/dequant.cu")),
    (
        "cross_entropy",
        include_str!("../../../kernels/cross_entropy.cu"),
    ),
    ("embedding", include_str!("../../../kernels/embedding.cu")),
    ("reduce", include_str!("../../../kernels/reduce.cu")),
    ("rmsnorm", include_str!("../../../kernels/rmsnorm.cu")),
    ("rope", include_str!("../../../kernels/rope.cu")),
    ("softmax", include_str!("../../../kernels/softmax.cu")),
    ("swiglu", include_str!("../../../kernels/swiglu.cu")),
    ("unary", include_str!("../../../kernels/unary.cu")),
];

/// The source of `family` with the shared header inlined (NVRTC sees one translation unit).
pub fn source(family: &str) -> Result<String> {
    let (_, src) = FAMILIES
        .iter()
        .find(|(name, _)| *name == family)
        .ok_or_else(|| Error::invalid("kernel family", format!("no family named {family:?}")))?;
    Ok(src.replace("#include \"common.cuh\"", COMMON))
}

/// Where `cuda_bf16.h` and friends are: `TAPEGRAD_CUDA_INCLUDE`, `$CUDA_HOME/include`, `$CUDA_PATH/include`
/// or `/usr/local/cuda/include`.
pub fn include_dir() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("TAPEGRAD_CUDA_INCLUDE") {
        candidates.push(dir.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(dir) = std::env::var_os(var) {
            candidates.push(PathBuf::from(dir).join("include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    candidates
        .iter()
        .find(|d| d.join("cuda_bf16.h").is_file())
        .cloned()
        .ok_or_else(|| Error::Device {
            op: "nvrtc",
            msg: format!(
                "cuda_bf16.h not found in any of {candidates:?}; set TAPEGRAD_CUDA_INCLUDE to the CUDA include folder"
            ),
        })
}

/// Whether the NVRTC library can be loaded (cudarc panics on first use when it cannot).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the shared library by its soname.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// PTX for `family` on `arch`.
pub fn compile(family: &str, arch: Arch) -> Result<String> {
    if !nvrtc_present() {
        return Err(Error::Device {
            op: "nvrtc",
            msg: "the NVRTC library (libnvrtc.so) is not on LD_LIBRARY_PATH".into(),
        });
    }
    let src = source(family)?;
    let options = CompileOptions {
        arch: Some(arch.compute()),
        include_paths: vec![include_dir()?.display().to_string()],
        options: vec!["--std=c++17".into()],
        name: Some(format!("{family}.cu")),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(src, options).map_err(|e| Error::Device {
        op: "nvrtc",
        msg: format!("compiling kernels/{family}.cu for {}: {e}", arch.compute()),
    })?;
    Ok(ptx.to_src())
}
