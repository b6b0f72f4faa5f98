//! Storage and raw kernels. `Device` says where a tensor lives; `Storage` holds its elements. This module knows
//! nothing of tensors or the tape: kernels take slices and layouts.
//!
//! Architecture invariant: this is the only module that matches on `Device`. The CPU backend is always built;
//! a GPU backend plugs in as another `Storage` variant behind a cargo feature.

pub mod cpu;

pub use cpu::Storage;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, computed with rayon over all cores.
    Cpu,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Err(crate::Error::Device {
                op: "device",
                msg: "cuda is not available in this build (the cuda backend is not built in)"
                    .into(),
            }),
            other => Err(crate::Error::invalid(
                "device",
                format!("unknown device {other:?} (expected cpu or cuda)"),
            )),
        }
    }
}
