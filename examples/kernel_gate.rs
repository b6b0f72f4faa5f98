//! Compiles every kernel family for sm_80 and sm_90 through the project's own NVRTC path and writes the PTX
//! (`<family>.<sm>.ptx`) into the folder given as the only argument. Needs no GPU: `scripts/kernel-gate.sh`
//! runs it, then assembles each file with ptxas.

use tapegrad::backend::cuda::nvrtc::{compile, Arch, FAMILIES};

fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: kernel_gate OUT_DIR");
        std::process::exit(2);
    };
    let out = std::path::PathBuf::from(out);
    let mut failed = false;
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: creating {}: {e}", out.display());
        std::process::exit(1);
    }
    for (family, _) in FAMILIES {
        for arch in Arch::ALL {
            match compile(family, arch) {
                Ok(ptx) => {
                    let path = out.join(format!("{family}.{}.ptx", arch.sm()));
                    if let Err(e) = std::fs::write(&path, ptx) {
                        eprintln!("error: writing {}: {e}", path.display());
                        failed = true;
                    } else {
                        println!("compiled kernels/{family}.cu for {}", arch.compute());
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
