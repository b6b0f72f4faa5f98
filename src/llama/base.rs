//! The frozen base of an adapter run: where it came from (the path of a GGUF file or a Hugging Face folder,
//! the FNV-1a 64 checksum of its bytes, and how its matrices were held), so a checkpoint holding adapters only
//! can load its base again and refuse one that changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::Llama;
use super::pretrained::{load_pretrained_with, Quantization, TextTokenizer};
use crate::error::{Error, Result};
use crate::io::checksum::Fnv1a64;

/// A base model by path and checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    /// The GGUF file or Hugging Face folder.
    pub path: PathBuf,
    /// FNV-1a 64 of the file, or of the folder's `config.json` and safetensors files in name order, as hex.
    pub checksum: String,
    /// How the matrices were held: `dense`, `keep` or the format the projections were quantized to.
    pub weights: String,
}

impl BaseRef {
    /// The reference to the base at `path`, loaded as `quantization` says.
    pub fn of(path: &Path, quantization: Quantization) -> Result<BaseRef> {
        Ok(BaseRef {
            path: path.to_path_buf(),
            checksum: checksum(path)?,
            weights: quantization.flag(),
        })
    }

    /// Loads the base again, after checking that its bytes are those it was trained over.
    pub fn load(&self) -> Result<(Llama, Option<TextTokenizer>)> {
        let now = checksum(&self.path)?;
        if now != self.checksum {
            return Err(Error::format(
                &self.path,
                format!(
                    "the base model changed since the adapters were trained over it (checksum {now}, expected {})",
                    self.checksum
                ),
            ));
        }
        let quantization = Quantization::parse("base weights", &self.weights)?;
        load_pretrained_with(&self.path, quantization)
    }
}

/// The checksum of a model file, or of a Hugging Face folder's config and weights.
fn checksum(path: &Path) -> Result<String> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name == "config.json" || name.ends_with(".safetensors")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut hash = Fnv1a64::new();
    for file in files {
        let f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        // SAFETY: read-only map, dropped at the end of this iteration.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(&file, e))?;
        hash.update(&map);
    }
    Ok(format!("{:016x}", hash.finish()))
}
