//! Keeps the code map in docs/ARCHITECTURE.md and the layering true, in the spirit of rust-analyzer's tidy:
//! every test, bench and example is named in its row and every name there exists; `data` and `io` import
//! nothing of `llama`; no source file is over 800 lines; no op picks a device (no `cfg(feature` and no
//! `is_cuda()` under `src/ops`: the backend dispatches); the backend knows nothing of tensors, ops or the
//! tape; every op file is covered by a finite-difference test that names it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The longest a source file may be, inline tests included.
const MAX_LINES: usize = 800;

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
fn no_op_picks_a_device() {
    for path in sources("src/ops") {
        let text = read(&Path::new(ROOT).join(&path));
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.contains("is_cuda()") && !line.contains("cfg(feature"),
                "{}:{}: a device branch in an op; dispatch on the storage in backend instead",
                path.display(),
                i + 1
            );
        }
    }
}

#[test]
fn the_dispatch_has_no_feature_gates() {
    // The kernel families of `src/backend/*.rs` dispatch on `Storage::Cuda` in every build: without the `cuda`
    // feature the launchers are `cuda_off.rs`'s uninhabited stand-ins. Only `mod.rs` picks which module is
    // `cuda`, and `cuda_off.rs` is the stand-in.
    for path in sources("src/backend") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let top_level = path.parent() == Some(Path::new("src/backend"));
        if !top_level || name == "mod.rs" || name == "cuda_off.rs" {
            continue;
        }
        let text = read(&Path::new(ROOT).join(&path));
        assert!(
            !text.contains("cfg(feature"),
            "{} gates code on a feature; dispatch on Storage::Cuda (cuda_off.rs stands in without the GPU)",
            path.display()
        );
    }
}

#[test]
fn the_backend_knows_nothing_of_tensors_ops_or_the_tape() {
    for path in sources("src/backend") {
        let text = read(&Path::new(ROOT).join(&path));
        for above in ["crate::tensor", "crate::ops", "crate::tape", "crate::llama"] {
            assert!(
                !text.contains(above),
                "{} uses {above}: backend kernels take storages and layouts",
                path.display()
            );
        }
    }
}

#[test]
fn every_op_file_is_named_by_its_finite_difference_test() {
    let ops = read(&Path::new(ROOT).join("tests/ops.rs"));
    let gpu = read(&Path::new(ROOT).join("tests/cuda_ops.rs"));
    for path in sources("src/ops") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "mod.rs" {
            continue;
        }
        // Moving between devices is checked where there is a device to move to.
        let tests = if name == "device.rs" { &gpu } else { &ops };
        assert!(
            tests.contains(&format!("`ops/{name}`")),
            "no test in tests/ops.rs says it covers `ops/{name}`"
        );
    }
}
