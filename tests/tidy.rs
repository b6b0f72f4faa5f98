//! Keeps the code map in docs/ARCHITECTURE.md and the layering true, in the spirit of rust-analyzer's tidy:
//! every test, bench and example is named in its row and every name there exists; `data` and `io` import
//! nothing of `llama`; no source file is over 800 lines; the device branches under `src/ops` may only become
//! fewer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The longest a source file may be, inline tests included.
const MAX_LINES: usize = 800;

/// `is_cuda()` calls and `cfg(feature` lines under `src/ops` today; the redesign takes them to zero.
const OPS_DEVICE_BRANCHES: usize = 53;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, recursively, as paths relative to the crate root.
fn sources(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(ROOT).join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(ROOT).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The plain names in backticks in the code map's row for `folder` (e.g. "tests/"): not paths or flags.
fn named_in_row(folder: &str) -> BTreeSet<String> {
    let doc = read(&Path::new(ROOT).join("docs/ARCHITECTURE.md"));
    let marker = format!("| `{folder}` |");
    let row = doc
        .lines()
        .find(|l| l.starts_with(&marker))
        .unwrap_or_else(|| panic!("docs/ARCHITECTURE.md has no row for {folder}"));
    row[marker.len()..]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_string)
        .collect()
}

/// The targets in `folder`: its `.rs` files' stems (helpers in sub-folders are not targets).
fn targets(folder: &str) -> BTreeSet<String> {
    std::fs::read_dir(Path::new(ROOT).join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_test_bench_and_example_is_in_the_code_map_and_nothing_else_is() {
    for folder in ["tests/", "benches/", "examples/"] {
        let (named, present) = (named_in_row(folder), targets(folder));
        let missing: Vec<_> = present.difference(&named).collect();
        let stale: Vec<_> = named.difference(&present).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/ARCHITECTURE.md, row {folder}: not named {missing:?}; named but absent {stale:?}"
        );
    }
}

#[test]
fn data_and_io_import_nothing_of_llama() {
    for dir in ["src/data", "src/io"] {
        for path in sources(dir) {
            let text = read(&Path::new(ROOT).join(&path));
            assert!(
                !text.contains("crate::llama"),
                "{} imports from llama",
                path.display()
            );
        }
    }
}

#[test]
fn source_files_stay_under_the_line_limit() {
    for path in sources("src") {
        let lines = read(&Path::new(ROOT).join(&path)).lines().count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines; the limit is {MAX_LINES} (split it)",
            path.display()
        );
    }
}

#[test]
fn device_branches_under_ops_only_become_fewer() {
    let count: usize = sources("src/ops")
        .iter()
        .map(|p| {
            read(&Path::new(ROOT).join(p))
                .lines()
                .filter(|l| l.contains("is_cuda()") || l.contains("cfg(feature"))
                .count()
        })
        .sum();
    assert!(
        count <= OPS_DEVICE_BRANCHES,
        "src/ops has {count} device branches, more than the {OPS_DEVICE_BRANCHES} it had: dispatch in backend"
    );
}
