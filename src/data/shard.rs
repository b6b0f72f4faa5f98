//! Token shards: a flat file of token ids read through a memory map, so that a corpus of any size costs no
//! heap. The layout is a 32-byte little-endian header — magic `TGSHARD1`, version `u32` = 1, vocab size
//! `u32`, token width `u32` (2 when the vocab size is at most 65536, else 4), reserved `u32` = 0, token
//! count `u64` — followed by the tokens, each `width` bytes little-endian. Shards are written atomically
//! (temporary file, fsync, rename), so a reader never sees a half-written shard and a mapped file is never
//! changed in place. [`Shard::open`] checks the header, the exact file length (with checked arithmetic,
//! before any slicing) and that every token is below the vocab size; each problem is an `Error::Format`
//! naming the file and the problem.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::io::write_file_atomically;

/// The first 8 bytes of every shard.
const MAGIC: &[u8; 8] = b"TGSHARD1";
/// The format version this code reads and writes.
const VERSION: u32 = 1;
/// The size of the header in bytes.
const HEADER_BYTES: usize = 32;
/// The largest vocab size stored with 2-byte tokens.
const MAX_NARROW_VOCAB: u32 = 1 << 16;

/// The token width, in bytes, that a shard of `vocab_size` uses.
fn width_for_vocab(vocab_size: u32) -> u32 {
    if vocab_size <= MAX_NARROW_VOCAB {
        2
    } else {
        4
    }
}

/// A read-only, memory-mapped token shard whose header and tokens have been validated.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    vocab_size: u32,
    width: usize,
    len: usize,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shard")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size)
            .field("width", &self.width)
            .field("len", &self.len)
            .finish()
    }
}

impl Shard {
    /// Writes `tokens` to `path` as a shard of `vocab_size`, atomically; every token must be below
    /// `vocab_size`.
    pub fn write(path: impl AsRef<Path>, tokens: &[u32], vocab_size: u32) -> Result<()> {
        let path = path.as_ref();
        if vocab_size == 0 {
            return Err(Error::invalid("vocab_size", "must be positive"));
        }
        if let Some(index) = tokens.iter().position(|&token| token >= vocab_size) {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "token {} at index {index} is not below the vocab size {vocab_size} (writing {})",
                    tokens[index],
                    path.display()
                ),
            ));
        }
        let width = width_for_vocab(vocab_size);
        write_file_atomically(path, |writer| {
            writer.write_all(&header_bytes(vocab_size, width, tokens.len() as u64))?;
            write_tokens(writer, tokens, width)
        })
    }

    /// Maps and validates the shard at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Shard> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|error| Error::io(path, error))?;
        let file_len = file
            .metadata()
            .map_err(|error| Error::io(path, error))?
            .len();
        if file_len < HEADER_BYTES as u64 {
            return Err(Error::format(
                path,
                format!("file is {file_len} bytes, shorter than the {HEADER_BYTES}-byte header"),
            ));
        }
        // SAFETY: the map is read-only and shards are only ever replaced by renaming a new file over the
        // path, never modified in place, so the mapped bytes do not change while this `Shard` lives.
        let map = unsafe { Mmap::map(&file) }.map_err(|error| Error::io(path, error))?;
        let header = parse_header(&map).map_err(|message| Error::format(path, message))?;
        let shard = Shard {
            path: path.to_path_buf(),
            map,
            vocab_size: header.vocab_size,
            width: header.width,
            len: header.len,
        };
        shard.check_token_range()?;
        Ok(shard)
    }

    /// Like [`Shard::open`], and also checks that the shard's vocab size is `vocab_size`.
    pub fn open_expecting(path: impl AsRef<Path>, vocab_size: u32) -> Result<Shard> {
        let shard = Shard::open(path)?;
        if shard.vocab_size != vocab_size {
            return Err(Error::format(
                &shard.path,
                format!(
                    "vocab size is {} but {vocab_size} was expected",
                    shard.vocab_size
                ),
            ));
        }
        Ok(shard)
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The vocab size recorded in the header; every token is below it.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Token `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn get(&self, index: usize) -> u32 {
        assert!(
            index < self.len,
            "shard {}: index {index} out of range for {} tokens",
            self.path.display(),
            self.len
        );
        let mut token = [0u32; 1];
        self.read_into(index, &mut token);
        token[0]
    }

    /// Copies tokens `start..start + out.len()` into `out`.
    ///
    /// # Panics
    /// If the window runs past the end of the shard.
    pub fn read_into(&self, start: usize, out: &mut [u32]) {
        let end = start.checked_add(out.len());
        assert!(
            end.is_some_and(|end| end <= self.len),
            "shard {}: window {start}..{start}+{} out of range for {} tokens",
            self.path.display(),
            out.len(),
            self.len
        );
        let bytes = &self.token_bytes()[start * self.width..(start + out.len()) * self.width];
        if self.width == 2 {
            for (token, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *token = u32::from(u16::from_le_bytes([pair[0], pair[1]]));
            }
        } else {
            for (token, quad) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *token = u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]);
            }
        }
    }

    /// All tokens, copied into a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        let mut tokens = vec![0; self.len];
        self.read_into(0, &mut tokens);
        tokens
    }

    /// The bytes after the header.
    fn token_bytes(&self) -> &[u8] {
        &self.map[HEADER_BYTES..]
    }

    /// Fails if any token is not below the vocab size.
    fn check_token_range(&self) -> Result<()> {
        if self.width == 2 && self.vocab_size >= MAX_NARROW_VOCAB {
            return Ok(());
        }
        let mut window = vec![0u32; 1 << 16];
        let mut start = 0;
        while start < self.len {
            let count = window.len().min(self.len - start);
            self.read_into(start, &mut window[..count]);
            if let Some(offset) = window[..count]
                .iter()
                .position(|&token| token >= self.vocab_size)
            {
                return Err(Error::format(
                    &self.path,
                    format!(
                        "token {} at index {} is not below the vocab size {}",
                        window[offset],
                        start + offset,
                        self.vocab_size
                    ),
                ));
            }
            start += count;
        }
        Ok(())
    }
}

/// The validated fields of a shard header.
struct Header {
    vocab_size: u32,
    width: usize,
    len: usize,
}

/// The 32 header bytes of a shard.
fn header_bytes(vocab_size: u32, width: u32, len: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&vocab_size.to_le_bytes());
    header[16..20].copy_from_slice(&width.to_le_bytes());
    header[20..24].copy_from_slice(&0u32.to_le_bytes());
    header[24..32].copy_from_slice(&len.to_le_bytes());
    header
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

/// Checks the header of a whole shard file (`file.len() >= HEADER_BYTES`) against its length.
fn parse_header(file: &[u8]) -> std::result::Result<Header, String> {
    if &file[0..8] != MAGIC {
        return Err("bad magic, not a token shard".to_string());
    }
    let version = read_u32(file, 8);
    if version != VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let vocab_size = read_u32(file, 12);
    if vocab_size == 0 {
        return Err("vocab size is 0".to_string());
    }
    let width = read_u32(file, 16);
    if width != 2 && width != 4 {
        return Err(format!("token width {width} is not 2 or 4"));
    }
    let expected_width = width_for_vocab(vocab_size);
    if width != expected_width {
        return Err(format!(
            "token width {width} does not fit vocab size {vocab_size} (expected width {expected_width})"
        ));
    }
    let reserved = read_u32(file, 20);
    if reserved != 0 {
        return Err(format!("reserved field is {reserved}, expected 0"));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&file[24..32]);
    let len = u64::from_le_bytes(count);
    let expected_bytes = len
        .checked_mul(u64::from(width))
        .and_then(|bytes| bytes.checked_add(HEADER_BYTES as u64));
    let Some(expected_bytes) = expected_bytes else {
        return Err(format!(
            "header says {len} tokens, more than any file can hold"
        ));
    };
    if file.len() as u64 != expected_bytes {
        return Err(format!(
            "file is {} bytes but the header says {expected_bytes}",
            file.len()
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| format!("header says {len} tokens, more than this machine can address"))?;
    Ok(Header {
        vocab_size,
        width: width as usize,
        len,
    })
}

/// Writes `tokens` little-endian, `width` bytes each.
fn write_tokens(writer: &mut dyn Write, tokens: &[u32], width: u32) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(1 << 16);
    for block in tokens.chunks(1 << 14) {
        buffer.clear();
        for &token in block {
            if width == 2 {
                buffer.extend_from_slice(&(token as u16).to_le_bytes());
            } else {
                buffer.extend_from_slice(&token.to_le_bytes());
            }
        }
        writer.write_all(&buffer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TempDir;

    fn format_message(result: Result<Shard>) -> String {
        match result {
            Err(Error::Format { msg, .. }) => msg,
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_narrow_tokens() {
        let dir = TempDir::new("shard-narrow");
        let path = dir.path().join("narrow.bin");
        let tokens: Vec<u32> = (0..100_000).map(|i| (i * 7919) % 65536).collect();
        Shard::write(&path, &tokens, 65536).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32 + 2 * 100_000);
        let shard = Shard::open_expecting(&path, 65536).unwrap();
        assert_eq!(
            (shard.len(), shard.vocab_size(), shard.is_empty()),
            (100_000, 65536, false)
        );
        assert_eq!(shard.to_vec(), tokens);
        assert_eq!(shard.get(12_345), tokens[12_345]);
        let mut window = [0u32; 5];
        shard.read_into(99_995, &mut window);
        assert_eq!(window, tokens[99_995..]);
        let debug = format!("{shard:?}");
        for field in ["narrow.bin", "vocab_size: 65536", "width: 2", "len: 100000"] {
            assert!(debug.contains(field), "{debug}");
        }
    }

    #[test]
    fn round_trips_wide_tokens() {
        let dir = TempDir::new("shard-wide");
        let path = dir.path().join("wide.bin");
        let tokens: Vec<u32> = vec![0, 65536, 99_999, 7];
        Shard::write(&path, &tokens, 100_000).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32 + 4 * 4);
        let shard = Shard::open(&path).unwrap();
        assert_eq!(shard.to_vec(), tokens);
        assert_eq!(shard.get(2), 99_999);
    }

    #[test]
    fn round_trips_an_empty_shard() {
        let dir = TempDir::new("shard-empty");
        let path = dir.path().join("empty.bin");
        Shard::write(&path, &[], 300).unwrap();
        let shard = Shard::open(&path).unwrap();
        assert!(shard.is_empty());
        assert!(shard.to_vec().is_empty());
    }

    #[test]
    fn write_rejects_tokens_outside_the_vocab() {
        let dir = TempDir::new("shard-bad-token");
        let path = dir.path().join("bad.bin");
        let error = Shard::write(&path, &[1, 2, 300], 300).unwrap_err();
        assert!(
            error.to_string().contains("token 300 at index 2"),
            "{error}"
        );
        assert!(!path.exists());
        assert!(Shard::write(&path, &[], 0).is_err());
    }

    /// A valid shard of 3 tokens with vocab 300, as bytes, for corrupting.
    fn valid_bytes() -> Vec<u8> {
        let mut bytes = header_bytes(300, 2, 3).to_vec();
        for token in [5u16, 6, 299] {
            bytes.extend_from_slice(&token.to_le_bytes());
        }
        bytes
    }

    fn open_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> Result<Shard> {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        Shard::open(&path)
    }

    #[test]
    fn open_rejects_corrupt_headers() {
        let dir = TempDir::new("shard-corrupt");
        assert_eq!(
            open_bytes(&dir, "valid", &valid_bytes()).unwrap().to_vec(),
            [5, 6, 299]
        );

        let mut magic = valid_bytes();
        magic[0] = b'X';
        assert!(format_message(open_bytes(&dir, "magic", &magic)).contains("bad magic"));

        let mut version = valid_bytes();
        version[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert!(
            format_message(open_bytes(&dir, "version", &version)).contains("unsupported version 7")
        );

        let mut narrow = valid_bytes();
        narrow[12..16].copy_from_slice(&70_000u32.to_le_bytes());
        let message = format_message(open_bytes(&dir, "narrow", &narrow));
        assert!(
            message.contains("token width 2 does not fit vocab size 70000"),
            "{message}"
        );

        let mut width = valid_bytes();
        width[16..20].copy_from_slice(&3u32.to_le_bytes());
        assert!(format_message(open_bytes(&dir, "width", &width)).contains("token width 3"));

        let mut reserved = valid_bytes();
        reserved[20] = 1;
        assert!(format_message(open_bytes(&dir, "reserved", &reserved)).contains("reserved field"));

        let mut token = valid_bytes();
        token[36..38].copy_from_slice(&300u16.to_le_bytes());
        let message = format_message(open_bytes(&dir, "token", &token));
        assert!(message.contains("token 300 at index 2"), "{message}");

        let mut huge = valid_bytes();
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(format_message(open_bytes(&dir, "huge", &huge)).contains("more than any file"));
    }

    #[test]
    fn open_rejects_wrong_lengths() {
        let dir = TempDir::new("shard-length");
        let bytes = valid_bytes();
        let message = format_message(open_bytes(&dir, "short", &bytes[..20]));
        assert!(
            message.contains("file is 20 bytes, shorter than the 32-byte header"),
            "{message}"
        );
        let message = format_message(open_bytes(&dir, "truncated", &bytes[..37]));
        assert!(
            message.contains("file is 37 bytes but the header says 38"),
            "{message}"
        );
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(&[0, 0]);
        let message = format_message(open_bytes(&dir, "trailing", &trailing));
        assert!(
            message.contains("file is 40 bytes but the header says 38"),
            "{message}"
        );
        assert!(format_message(open_bytes(&dir, "empty", &[])).contains("file is 0 bytes"));
        let missing = Shard::open(dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }

    /// The error of opening a valid shard of `tokens` whose last token's bytes were overwritten by `last`.
    fn open_with_last_token(tokens: &[u32], vocab_size: u32, last: &[u8]) -> String {
        let dir = TempDir::new("shard-last-token");
        let path = dir.path().join("valid.bin");
        Shard::write(&path, tokens, vocab_size).unwrap();
        assert_eq!(Shard::open(&path).unwrap().to_vec(), tokens);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - last.len();
        bytes[at..].copy_from_slice(last);
        format_message(open_bytes(&dir, "patched", &bytes))
    }

    #[test]
    fn a_wide_token_past_a_large_vocab_is_rejected() {
        // 32-bit tokens with a vocabulary past 16 bits: every token is still checked.
        let message = open_with_last_token(&[1, 70_000, 3], 100_000, &200_000u32.to_le_bytes());
        assert!(
            message.contains("token 200000 at index 2 is not below the vocab size 100000"),
            "{message}"
        );
    }

    #[test]
    fn every_window_of_a_long_shard_is_checked() {
        // Longer than the check's window of 65,536 tokens, with the bad token in the last, partial window.
        let tokens: Vec<u32> = (0..100_000).map(|i| i % 60_000).collect();
        let message = open_with_last_token(&tokens, 60_000, &60_001u16.to_le_bytes());
        assert!(
            message.contains("token 60001 at index 99999 is not below the vocab size 60000"),
            "{message}"
        );
    }

    #[test]
    fn open_expecting_checks_the_vocab() {
        let dir = TempDir::new("shard-expecting");
        let path = dir.path().join("shard.bin");
        Shard::write(&path, &[1, 2, 3], 300).unwrap();
        let message = format_message(Shard::open_expecting(&path, 512));
        assert!(
            message.contains("vocab size is 300 but 512 was expected"),
            "{message}"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let dir = TempDir::new("shard-atomic");
        let path = dir.path().join("shard.bin");
        Shard::write(&path, &[1, 2, 3], 300).unwrap();
        let first = Shard::open(&path).unwrap();
        Shard::write(&path, &[4, 5], 300).unwrap();
        assert_eq!(first.to_vec(), [1, 2, 3], "an open map keeps the old file");
        assert_eq!(Shard::open(&path).unwrap().to_vec(), [4, 5]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn read_past_the_end_panics() {
        let dir = TempDir::new("shard-panic");
        let path = dir.path().join("shard.bin");
        Shard::write(&path, &[1, 2, 3], 300).unwrap();
        let shard = Shard::open(&path).unwrap();
        let mut window = [0u32; 2];
        shard.read_into(2, &mut window);
    }
}
