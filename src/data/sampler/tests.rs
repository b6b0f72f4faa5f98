//! Tests of `sampler`.

use super::*;
use crate::data::tokenizer::Tokenizer;
use crate::data::TempDir;
use std::path::PathBuf;

/// The files in `cache_dir`, sorted.
fn cached_shard_paths(cache_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cache_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
}

/// Generated prose with a few non-ASCII words.
fn sample_text(seed: u64, lines: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "river", "ran", "past", "a", "mill", "where", "millers", "sang", "über", "café",
        "and",
    ];
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    for _ in 0..lines {
        let length = 4 + rng.below(10) as usize;
        let words: Vec<&str> = (0..length)
            .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
            .collect();
        text.push_str(&words.join(" "));
        text.push_str(".\n");
    }
    text
}

fn tokenizer_for(texts: &[&str]) -> Tokenizer {
    let bytes: Vec<&[u8]> = texts.iter().map(|text| text.as_bytes()).collect();
    Tokenizer::train(&bytes, 300).unwrap()
}

/// A source over hand-made shards: train tokens `0..train_len`, val tokens `0..val_len`.
fn counting_source(dir: &TempDir, name: &str, train_len: u32, val_len: u32) -> Source {
    let train_path = dir.path().join(format!("{name}.train"));
    let val_path = dir.path().join(format!("{name}.val"));
    let train: Vec<u32> = (0..train_len).collect();
    let val: Vec<u32> = (0..val_len).collect();
    Shard::write(&train_path, &train, 100_000).unwrap();
    Shard::write(&val_path, &val, 100_000).unwrap();
    Source {
        name: name.to_string(),
        train: Shard::open(&train_path).unwrap(),
        val: Shard::open(&val_path).unwrap(),
        train_bytes: u64::from(train_len) * 3,
        val_bytes: u64::from(val_len) * 4,
        weight: 1.0,
        epochs: 1.0,
    }
}

#[test]
fn prepares_splits_and_reuses_the_cache() {
    let dir = TempDir::new("sampler-prepare");
    let text = sample_text(1, 400);
    let text_path = dir.path().join("river.txt");
    std::fs::write(&text_path, &text).unwrap();
    let tokenizer = tokenizer_for(&[&text]);
    let cache = dir.path().join("cache");
    let source = prepare_source("river", &text_path, &tokenizer, &cache, 0.1).unwrap();

    assert_eq!(source.train_bytes + source.val_bytes, text.len() as u64);
    let train_text = tokenizer.decode(&source.train.to_vec());
    let val_text = tokenizer.decode(&source.val.to_vec());
    assert!(train_text.ends_with(b"\n"));
    assert_eq!([train_text.clone(), val_text].concat(), text.as_bytes());
    let fraction = source.val_bytes as f64 / text.len() as f64;
    assert!((fraction - 0.1).abs() < 0.01, "val fraction {fraction}");

    let paths = cached_shard_paths(&cache);
    assert_eq!(paths.len(), 2);
    let key = format!(
        "{:016x}-{:016x}",
        fnv1a_64(text.as_bytes()),
        tokenizer.fingerprint()
    );
    assert!(paths
        .iter()
        .all(|path| path.to_string_lossy().contains(&key)));

    // A valid shard already in place is reused as it is ...
    let train_path = paths
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".train.tgs"))
        .unwrap();
    Shard::write(train_path, &[1, 2, 3], tokenizer.vocab_size() as u32).unwrap();
    let reused = prepare_source("river", &text_path, &tokenizer, &cache, 0.1).unwrap();
    assert_eq!(reused.train.to_vec(), [1, 2, 3]);
    // ... and a corrupt one is rebuilt.
    std::fs::write(train_path, b"garbage").unwrap();
    let rebuilt = prepare_source("river", &text_path, &tokenizer, &cache, 0.1).unwrap();
    assert_eq!(tokenizer.decode(&rebuilt.train.to_vec()), train_text);
    assert_eq!(cached_shard_paths(&cache).len(), 2);
}

#[test]
fn prepare_rejects_bad_corpora() {
    let dir = TempDir::new("sampler-bad-corpora");
    let tokenizer = tokenizer_for(&["some words here\n"]);
    let cache = dir.path().join("cache");
    let missing = dir.path().join("missing.txt");
    let error = prepare_source("x", &missing, &tokenizer, &cache, 0.05).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(error.to_string().contains("missing.txt"), "{error}");

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let error = prepare_source("x", &empty, &tokenizer, &cache, 0.05).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("empty.txt: text corpus is empty"),
        "{error}"
    );

    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"ok\n\xff\xfe").unwrap();
    let error = prepare_source("x", &binary, &tokenizer, &cache, 0.05).unwrap_err();
    assert!(matches!(error, Error::Format { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("not valid utf-8 (first bad byte at offset 3)"),
        "{error}"
    );

    let good = dir.path().join("good.txt");
    std::fs::write(&good, b"one\ntwo\n").unwrap();
    let error = prepare_source("x", &good, &tokenizer, &cache, 1.0).unwrap_err();
    assert!(error.to_string().contains("val_fraction"), "{error}");
}

#[test]
fn split_points_fall_after_newlines() {
    assert_eq!(split_point("aaaa\nbbbb\ncccc\ndddd\n", 0.25), 15);
    assert_eq!(split_point("aaaa\nbbbb\n", 0.0), 10);
    assert_eq!(split_point("no newline at all", 0.5), 9);
    assert_eq!(split_point("ééééé", 0.5), 6);
    assert_eq!(split_point("line\nrest", 0.3), 5);
    assert_eq!(split_point("line\nrest", 0.05), 9);
    // Newlines equally far on both sides of the target (4): the earlier one wins.
    assert_eq!(split_point("ab\nc\nde", 0.43), 3);
    // The target (10) is 3 past one newline and 4 before the next: the nearer, earlier one.
    assert_eq!(split_point("abcdef\nghijkl\nmn", 0.375), 7);
    assert_eq!(split_point("abcdef\nghij\nklmn", 0.375), 12);
}

#[test]
fn cache_names_keep_only_plain_characters() {
    assert_eq!(file_safe_name("Austen-1_b9"), "Austen-1_b9");
    assert_eq!(
        file_safe_name("war & peace/über.txt"),
        "war___peace__ber_txt"
    );
}

#[test]
fn batches_are_shifted_windows_from_the_weighted_sources() {
    let dir = TempDir::new("sampler-batches");
    let sources = vec![
        counting_source(&dir, "big", 5000, 100).with_weight(3.0),
        counting_source(&dir, "small", 1000, 100)
            .with_weight(1.0)
            .with_epochs(4.0),
    ];
    let seq_len = 16;
    let mut mixture = Mixture::new(sources, seq_len, 42).unwrap();
    let mut rows_seen = 0;
    for _ in 0..200 {
        let batch = mixture.next_batch(8);
        assert_eq!((batch.batch_size, batch.seq_len), (8, seq_len));
        assert_eq!(batch.inputs.len(), 8 * seq_len);
        for row in 0..8 {
            let inputs = &batch.inputs[row * seq_len..(row + 1) * seq_len];
            let targets = &batch.targets[row * seq_len..(row + 1) * seq_len];
            for t in 0..seq_len {
                assert_eq!(targets[t], inputs[t] + 1, "targets are the next tokens");
            }
            rows_seen += 1;
        }
    }
    assert_eq!(mixture.batches_drawn(), 200);
    let drawn = [mixture.tokens_drawn(0), mixture.tokens_drawn(1)];
    assert_eq!(drawn[0] + drawn[1], (rows_seen * seq_len) as u64);
    let share = drawn[0] as f64 / (drawn[0] + drawn[1]) as f64;
    assert!(
        (share - 0.75).abs() < 0.05,
        "share of the heavy source {share}"
    );
    assert!((mixture.epochs_seen(1) - drawn[1] as f64 / 1000.0).abs() < 1e-12);
    assert_eq!(mixture.sources()[1].epochs, 4.0);
}

#[test]
fn draws_on_the_boundaries_go_to_the_next_weighted_source() {
    let dir = TempDir::new("sampler-boundaries");
    let weighted = |weights: &[f64]| {
        let sources = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| counting_source(&dir, &format!("s{i}"), 100, 0).with_weight(w))
            .collect();
        Mixture::new(sources, 8, 0).unwrap()
    };
    let halves = weighted(&[1.0, 1.0]);
    assert_eq!(halves.seq_len(), 8);
    assert_eq!(halves.source_for(0.0), 0);
    assert_eq!(halves.source_for(0.499_999), 0);
    assert_eq!(
        halves.source_for(0.5),
        1,
        "a draw on a boundary belongs to the next source"
    );
    assert_eq!(halves.source_for(0.999_999), 1);
    // A source of weight 0 is never drawn, not even by a draw of exactly 0 ...
    let zero_first = weighted(&[0.0, 1.0, 1.0]);
    assert_eq!(zero_first.source_for(0.0), 1);
    // ... nor by a draw that rounding puts past the last cumulative sum, which goes to the last source
    // with a positive weight.
    let zero_last = weighted(&[1.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(zero_last.source_for(1.0), 2);
    let tenths = weighted(&[0.1; 10]);
    let last_sum = *tenths.cumulative_weights.last().unwrap();
    assert!(last_sum <= 1.0, "{last_sum}");
    assert_eq!(tenths.source_for(last_sum), 9);
    assert_eq!(tenths.source_for(1.0), 9);
}

#[test]
fn windows_reach_both_ends_of_a_source() {
    let dir = TempDir::new("sampler-ends");
    let mut mixture = Mixture::new(vec![counting_source(&dir, "tiny", 6, 0)], 4, 7).unwrap();
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..200 {
        firsts.insert(mixture.next_batch(1).inputs[0]);
    }
    assert_eq!(firsts.into_iter().collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn restored_state_repeats_the_batches() {
    let dir = TempDir::new("sampler-state");
    let make = || {
        let sources = vec![
            counting_source(&dir, "a", 3000, 50),
            counting_source(&dir, "b", 2000, 50).with_weight(0.5),
        ];
        Mixture::new(sources, 32, 9).unwrap()
    };
    let mut mixture = make();
    for _ in 0..3 {
        mixture.next_batch(4);
    }
    let saved = serde_json::to_string(&mixture.state()).unwrap();
    let expected: Vec<Batch> = (0..2).map(|_| mixture.next_batch(4)).collect();
    let state_after = mixture.state();

    let mut resumed = make();
    resumed
        .restore(serde_json::from_str(&saved).unwrap())
        .unwrap();
    let again: Vec<Batch> = (0..2).map(|_| resumed.next_batch(4)).collect();
    assert_eq!(again, expected);
    assert_eq!(resumed.state(), state_after);
    assert_eq!(resumed.batches_drawn(), 5);

    let mut wrong = Mixture::new(vec![counting_source(&dir, "a", 3000, 50)], 32, 9).unwrap();
    let error = wrong
        .restore(serde_json::from_str(&saved).unwrap())
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("2 sources but the mixture has 1"),
        "{error}"
    );

    // Each kind of mismatch is refused, and a refused state leaves the mixture as it was.
    let good: MixtureState = serde_json::from_str(&saved).unwrap();
    let mut mismatches = Vec::new();
    let mut short_counts = good.clone();
    short_counts.tokens_drawn.pop();
    mismatches.push((
        short_counts,
        "counts the tokens of 1 sources but the mixture has 2",
    ));
    let mut long_names = good.clone();
    long_names.source_names.push("c".into());
    mismatches.push((long_names, "3 sources but the mixture has 2"));
    let mut renamed = good.clone();
    renamed.source_names[1] = "c".into();
    mismatches.push((renamed, "source 1 is \"b\" but the saved state has \"c\""));
    for (state, message) in mismatches {
        let mut target = make();
        let before = target.state();
        let error = target.restore(state).unwrap_err();
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(target.state(), before);
    }
}

#[test]
fn rank_parts_split_the_global_batch() {
    let dir = TempDir::new("sampler-parts");
    let make = || {
        let sources = vec![
            counting_source(&dir, "a", 3000, 50),
            counting_source(&dir, "b", 2000, 50).with_weight(0.5),
        ];
        Mixture::new(sources, 16, 5).unwrap()
    };
    let mut whole = make();
    let mut ranks = [make(), make(), make()];
    for _ in 0..4 {
        let global = whole.next_batch(6);
        let parts: Vec<Batch> = ranks
            .iter_mut()
            .enumerate()
            .map(|(r, m)| m.next_batch_part(2, r, 3))
            .collect();
        let inputs: Vec<u32> = parts.iter().flat_map(|p| p.inputs.clone()).collect();
        let targets: Vec<u32> = parts.iter().flat_map(|p| p.targets.clone()).collect();
        assert_eq!(inputs, global.inputs);
        assert_eq!(targets, global.targets);
        assert!(parts.iter().all(|p| p.batch_size == 2));
        // Every rank's state is the whole run's, so one checkpoint resumes them all.
        for m in &ranks {
            assert_eq!(m.state(), whole.state());
        }
    }
    // Validation splits a batch by rows, the first ranks taking one more when they do not divide.
    let batch = whole.next_batch(5);
    let parts: Vec<Batch> = (0..2).map(|r| batch.part(r, 2)).collect();
    assert_eq!((parts[0].batch_size, parts[1].batch_size), (3, 2));
    assert_eq!(
        [parts[0].inputs.clone(), parts[1].inputs.clone()].concat(),
        batch.inputs
    );
    assert_eq!(
        [parts[0].targets.clone(), parts[1].targets.clone()].concat(),
        batch.targets
    );
    assert_eq!(batch.part(6, 7).batch_size, 0);
}

#[test]
fn mixture_rejects_bad_sources() {
    let dir = TempDir::new("sampler-reject");
    let error = Mixture::new(vec![counting_source(&dir, "short", 16, 0)], 16, 0).unwrap_err();
    assert!(
        error.to_string().contains("fewer than seq_len + 1 = 17"),
        "{error}"
    );
    assert!(error.to_string().contains("\"short\""), "{error}");
    let negative = counting_source(&dir, "neg", 100, 0).with_weight(-1.0);
    assert!(Mixture::new(vec![negative], 8, 0).is_err());
    for bad in [f64::NAN, f64::INFINITY] {
        let sources = vec![
            counting_source(&dir, "fine", 100, 0),
            counting_source(&dir, "odd", 100, 0).with_weight(bad),
        ];
        let error = Mixture::new(sources, 8, 0).unwrap_err().to_string();
        assert!(
            error.contains("source \"odd\": weight must be finite and non-negative"),
            "{error}"
        );
    }
    // A training split of exactly seq_len + 1 tokens holds one window.
    assert!(Mixture::new(vec![counting_source(&dir, "exact", 17, 0)], 16, 0).is_ok());
    // A validation shard over another vocabulary than its training shard.
    let mut mixed = counting_source(&dir, "mixed", 100, 10);
    let val_path = dir.path().join("mixed-other.val");
    Shard::write(&val_path, &[1, 2, 3], 512).unwrap();
    mixed.val = Shard::open(&val_path).unwrap();
    let error = Mixture::new(vec![mixed], 8, 0).unwrap_err().to_string();
    assert!(
        error.contains("vocab sizes 100000 and 512, but the mixture uses 100000"),
        "{error}"
    );
    let zero = counting_source(&dir, "zero", 100, 0).with_weight(0.0);
    assert!(Mixture::new(vec![zero], 8, 0).is_err());
    assert!(Mixture::new(Vec::new(), 8, 0).is_err());
    assert!(Mixture::new(vec![counting_source(&dir, "ok", 100, 0)], 0, 0).is_err());
}

#[test]
fn validation_windows_are_deterministic_and_target_disjoint() {
    let dir = TempDir::new("sampler-val");
    let sources = vec![
        counting_source(&dir, "a", 100, 41),
        counting_source(&dir, "b", 100, 21),
    ];
    let mixture = Mixture::new(sources, 10, 3).unwrap();
    // Source a has (41 - 1) / 10 = 4 windows, b has 2: order a0 b0 a1 b1 a2 a3.
    let batches = mixture.val_batches(4, usize::MAX);
    assert_eq!(batches, mixture.val_batches(4, usize::MAX));
    assert_eq!(batches.len(), 2);
    assert_eq!((batches[0].batch_size, batches[1].batch_size), (4, 2));
    let firsts: Vec<u32> = batches
        .iter()
        .flat_map(|batch| batch.inputs.chunks(10).map(|row| row[0]))
        .collect();
    assert_eq!(firsts, [0, 0, 10, 10, 20, 30]);
    for batch in &batches {
        for (input, target) in batch.inputs.iter().zip(&batch.targets) {
            assert_eq!(*target, input + 1);
        }
    }

    let counts = mixture.val_counts(4, usize::MAX);
    assert_eq!(counts.target_tokens, 60);
    // Every val split has 4 bytes per token in `counting_source`.
    assert!((counts.bytes - 240.0).abs() < 1e-9);
    // 60 targets at 1.5 nats each over 240 bytes: 90 / 240 / ln 2 = 0.541 bits per byte.
    let bpb = counts.bits_per_byte(1.5);
    assert!(
        (bpb - 0.375 / std::f64::consts::LN_2).abs() < 1e-12,
        "{bpb}"
    );
    assert!((bpb - 0.541_010_64).abs() < 1e-8, "{bpb}");

    let limited = mixture.val_batches(4, 1);
    assert_eq!(limited.len(), 1);
    assert_eq!(mixture.val_counts(4, 1).target_tokens, 40);
    // Four of the six windows, evenly spaced over the order a0 b0 a1 b1 a2 a3: a0 b0 b1 a2 — the
    // sample reaches the end of the split instead of stopping at its beginning.
    let spread: Vec<u32> = limited[0].inputs.chunks(10).map(|row| row[0]).collect();
    assert_eq!(spread, [0, 0, 10, 20]);
    let two: Vec<u32> = mixture.val_batches(2, 1)[0]
        .inputs
        .chunks(10)
        .map(|row| row[0])
        .collect();
    assert_eq!(two, [0, 10], "windows 0 and 3 of the order: a0 and b1");
}

#[test]
fn prepared_sources_feed_a_mixture() {
    let dir = TempDir::new("sampler-end-to-end");
    let first = sample_text(2, 300);
    let second = sample_text(3, 200);
    let tokenizer = tokenizer_for(&[&first, &second]);
    let cache = dir.path().join("cache");
    let mut sources = Vec::new();
    for (name, text) in [("first", &first), ("second", &second)] {
        let path = dir.path().join(format!("{name}.txt"));
        std::fs::write(&path, text).unwrap();
        sources
            .push(prepare_source(name, &path, &tokenizer, &cache, DEFAULT_VAL_FRACTION).unwrap());
    }
    let mut mixture = Mixture::new(sources, 8, 1).unwrap();
    let batch = mixture.next_batch(3);
    assert!(batch
        .inputs
        .iter()
        .all(|&id| (id as usize) < tokenizer.vocab_size()));
    let counts = mixture.val_counts(2, 3);
    assert_eq!(counts.target_tokens, 6 * 8);
    let ratio = counts.bytes / counts.target_tokens as f64;
    assert!(ratio > 1.0 && ratio < 8.0, "bytes per token {ratio}");
}
