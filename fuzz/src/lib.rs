//! Shared by the fuzz targets: the readers under test take paths, so each input goes through one scratch file
//! per process (in the RAM-backed /dev/shm when there is one).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Writes `bytes` to this process's scratch file for `kind` and returns its path.
pub fn scratch(kind: &str, bytes: &[u8]) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("tapegrad-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    });
    let path = dir.join(kind);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}
