//! Crash-safe file writes: a file is either its old contents or its new ones, never half of each.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes a file atomically: `fill` writes into a fresh temporary file in the same folder, which is flushed,
/// fsynced and renamed over `path`. On failure the temporary file is removed and `path` is left as it was.
pub fn write_file_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(file_name) = path.file_name() else {
        return Err(Error::invalid(
            "path",
            format!("{} does not name a file", path.display()),
        ));
    };
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temporary = folder.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_and_sync(&temporary, fill)
        .and_then(|()| std::fs::rename(&temporary, path).map_err(|error| Error::io(path, error)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return written;
    }
    // Make the rename itself durable; not every platform lets a folder be opened and synced.
    if let Ok(folder_handle) = File::open(folder) {
        let _ = folder_handle.sync_all();
    }
    Ok(())
}

/// Creates `path`, lets `fill` write it, then flushes and fsyncs it.
fn write_and_sync(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| Error::io(path, error))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    fill(&mut writer).map_err(|error| Error::io(path, error))?;
    let file = writer
        .into_inner()
        .map_err(|error| Error::io(path, error.into_error()))?;
    file.sync_all().map_err(|error| Error::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("tapegrad-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file.txt");
        write_file_atomically(&path, |w: &mut dyn Write| w.write_all(b"old")).unwrap();
        let err = write_file_atomically(&path, |w: &mut dyn Write| {
            w.write_all(b"half of the new")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let err = write_file_atomically(Path::new("/"), |_: &mut dyn Write| Ok(())).unwrap_err();
        assert!(err.to_string().contains("does not name a file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
