//! Tests of `tokenizer`.

use super::*;
use crate::data::TempDir;
use crate::rng::Rng;
use proptest::prelude::*;
use std::sync::OnceLock;

/// A small generated corpus with words, numbers, punctuation, UTF-8 and assorted whitespace.
fn sample_text(seed: u64, sentences: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "queen", "said", "that", "thee", "thou", "there", "then", "lovely", "love",
        "loving", "café", "naïve", "über", "日本", "hello", "world", "and", "hath", "sweet",
    ];
    const PUNCTUATION: &[&str] = &[",", ".", "!", "?", ";", "--", "'", "\"", "...", ":)"];
    const GAPS: &[&str] = &[" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n "];
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    for _ in 0..sentences {
        let length = 3 + rng.below(8) as usize;
        for word_index in 0..length {
            if word_index > 0 {
                text.push_str(GAPS[rng.below(GAPS.len() as u64) as usize]);
            }
            if rng.below(7) == 0 {
                text.push_str(&rng.below(100_000).to_string());
            } else {
                text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            }
            if rng.below(5) == 0 {
                text.push_str(PUNCTUATION[rng.below(PUNCTUATION.len() as u64) as usize]);
            }
        }
        text.push_str(".\n");
    }
    text
}

fn small_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let text = sample_text(1, 400);
        Tokenizer::train(&[text.as_bytes()], 420).unwrap()
    })
}

/// BPE by full recount before every merge: the reference the incremental learner must match.
fn reference_merges(texts: &[&[u8]], budget: usize) -> Vec<(u32, u32)> {
    let counts = count_chunks(texts);
    let mut chunks: Vec<(Vec<u32>, u64)> = counts
        .into_iter()
        .map(|(bytes, count)| (bytes.iter().map(|&b| u32::from(b)).collect(), count))
        .collect();
    let mut lengths = vec![1usize; FIRST_MERGED_ID as usize];
    let mut merges = Vec::new();
    while merges.len() < budget {
        let mut pair_counts: HashMap<(u32, u32), u64> = HashMap::new();
        for (symbols, count) in &chunks {
            for pair in symbols.windows(2) {
                *pair_counts.entry((pair[0], pair[1])).or_insert(0) += count;
            }
        }
        let best = pair_counts
            .into_iter()
            .filter(|&((a, b), _)| lengths[a as usize] + lengths[b as usize] <= MAX_TOKEN_BYTES)
            .max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(&x.0)));
        let Some(((left, right), _)) = best else {
            break;
        };
        let new_id = FIRST_MERGED_ID + merges.len() as u32;
        for (symbols, _) in &mut chunks {
            let mut merged = Vec::new();
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    merged.push(new_id);
                    i += 2;
                } else {
                    merged.push(symbols[i]);
                    i += 1;
                }
            }
            *symbols = merged;
        }
        lengths.push(lengths[left as usize] + lengths[right as usize]);
        merges.push((left, right));
    }
    merges
}

#[test]
fn incremental_training_matches_full_recount() {
    let text = sample_text(2, 300);
    let extra = b"aaaaaaa abababab aaaa bbbb abab\n\n  \n   x";
    let texts: [&[u8]; 2] = [text.as_bytes(), extra];
    let tokenizer = Tokenizer::train(&texts, 600).unwrap();
    assert_eq!(
        tokenizer.merges(),
        reference_merges(&texts, 600 - 258).as_slice()
    );
}

#[test]
fn training_is_deterministic_and_sized() {
    let text = sample_text(3, 200);
    let first = Tokenizer::train(&[text.as_bytes()], 350).unwrap();
    let second = Tokenizer::train(&[text.as_bytes()], 350).unwrap();
    assert_eq!(first.merges(), second.merges());
    assert_eq!(first.fingerprint(), second.fingerprint());
    assert_eq!(first.vocab_size(), 350);
    assert_eq!((first.bos_id(), first.eos_id()), (256, 257));
    let shown = format!("{first:?}");
    let expected = format!(
        "Tokenizer {{ vocab_size: 350, merges: {}, fingerprint: {:016x} }}",
        first.merges().len(),
        first.fingerprint()
    );
    assert_eq!(shown, expected);
    // Other merges, fewer of them or other special names: another fingerprint.
    let longer = Tokenizer::train(&[text.as_bytes()], 351).unwrap();
    let other_text = Tokenizer::train(&[sample_text(4, 200).as_bytes()], 350).unwrap();
    let mut renamed = first.clone();
    renamed.special_names[1] = "<|end|>".to_string();
    for other in [&longer, &other_text, &renamed] {
        assert_ne!(other.fingerprint(), first.fingerprint());
    }
}

#[test]
fn training_rejects_bad_arguments() {
    let error = Tokenizer::train(&[b"hello"], 257).unwrap_err();
    assert!(error.to_string().contains("vocab_size"), "{error}");
    assert!(Tokenizer::train(&[b""], 300).is_err());
    assert!(Tokenizer::train(&[], 300).is_err());
    // Sizes at the limits: from 258 (the bytes and the specials) to `u32::MAX` (ids that fit 32 bits).
    assert!(check_vocab_size(258).is_ok());
    assert!(check_vocab_size(u32::MAX as usize).is_ok());
    let error = check_vocab_size(u32::MAX as usize + 1).unwrap_err();
    assert!(error.to_string().contains("32-bit"), "{error}");
    let most = (u32::MAX - 258) as usize;
    assert!(check_merge_count(most).is_ok());
    assert!(check_merge_count(most + 1)
        .unwrap_err()
        .contains("do not fit 32-bit ids"));
}

#[test]
fn training_stops_when_pairs_run_out() {
    let tokenizer = Tokenizer::train(&[b"ab ab"], 1000).unwrap();
    assert!(tokenizer.vocab_size() < 1000);
    assert_eq!(tokenizer.encode(b"ab ab").len(), 2);
}

#[test]
fn no_learned_token_is_longer_than_the_cap() {
    // One word of 1,000 letters: merges double its pieces until a merge would pass MAX_TOKEN_BYTES.
    let word = "a".repeat(1000);
    let tokenizer = Tokenizer::train(&[word.as_bytes()], 400).unwrap();
    let longest = (0..tokenizer.vocab_size() as u32)
        .map(|id| tokenizer.token_bytes(id).len())
        .max()
        .unwrap();
    assert_eq!(longest, MAX_TOKEN_BYTES);
    assert_eq!(
        tokenizer.decode(&tokenizer.encode(word.as_bytes())),
        word.as_bytes()
    );
}

#[test]
fn pre_tokenization_follows_the_rules() {
    let chunks: Vec<&[u8]> =
        pre_tokenize(b"Hello  world, 42 caf\xc3\xa9!!\n\n  Yes\t ok").collect();
    let expected: Vec<&[u8]> = vec![
        b"Hello",
        b" ",
        b" world",
        b",",
        b" 4",
        b"2",
        b" caf\xc3\xa9",
        b"!!",
        b"\n\n ",
        b" Yes",
        b"\t",
        b" ok",
    ];
    assert_eq!(chunks, expected);
    let trailing: Vec<&[u8]> = pre_tokenize(b"a  ").collect();
    assert_eq!(trailing, vec![b"a" as &[u8], b"  "]);
}

#[test]
fn digits_are_single_tokens() {
    let tokenizer = small_tokenizer();
    let text = b"in 1999 there were 31415 queens, 007 and x2y";
    let ids = tokenizer.encode(text);
    for &id in &ids {
        let bytes = tokenizer.token_bytes(id);
        if bytes.iter().any(u8::is_ascii_digit) {
            assert_eq!(bytes.len(), 1, "token {id} is {bytes:?}");
        }
    }
    assert_eq!(tokenizer.decode(&ids), text);
}

#[test]
fn merges_shorten_the_training_text() {
    let tokenizer = small_tokenizer();
    let text = sample_text(1, 50);
    let ids = tokenizer.encode(text.as_bytes());
    assert!(
        ids.len() * 2 < text.len(),
        "{} ids for {} bytes",
        ids.len(),
        text.len()
    );
    assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
}

#[test]
fn special_tokens_decode_to_nothing() {
    let tokenizer = small_tokenizer();
    let mut ids = vec![tokenizer.bos_id()];
    ids.extend(tokenizer.encode(b"the queen"));
    ids.push(tokenizer.eos_id());
    ids.push(u32::MAX);
    assert_eq!(tokenizer.decode(&ids), b"the queen");
    assert_eq!(
        tokenizer.decode_lossy(&tokenizer.encode(b"\xffok")),
        "\u{fffd}ok"
    );
}

#[test]
fn parallel_encoding_matches_serial() {
    let tokenizer = small_tokenizer();
    let text = sample_text(5, 120_000);
    assert!(text.len() > 3 * PARALLEL_PIECE_BYTES);
    assert_eq!(
        tokenizer.encode_parallel(text.as_bytes()),
        tokenizer.encode(text.as_bytes())
    );
}

#[test]
fn save_and_load_round_trip() {
    let tokenizer = small_tokenizer();
    let dir = TempDir::new("tokenizer-round-trip");
    let path = dir.path().join("tokenizer.json");
    tokenizer.save(&path).unwrap();
    let loaded = Tokenizer::load(&path).unwrap();
    assert_eq!(loaded.merges(), tokenizer.merges());
    assert_eq!(loaded.fingerprint(), tokenizer.fingerprint());
    let text = sample_text(9, 100);
    assert_eq!(
        loaded.encode(text.as_bytes()),
        tokenizer.encode(text.as_bytes())
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");
}

#[test]
fn spellings_learned_twice_or_shared_with_a_special_are_found() {
    let names = |bos: &str| [bos.to_string(), "</s>".to_string()];
    let (a, aa) = (u32::from(b'a'), FIRST_MERGED_ID);
    // "aa", then "aaa" twice: as "aa" + "a" and as "a" + "aa".
    let twice = Tokenizer::from_merges(vec![(a, a), (aa, a), (a, aa)], names("<s>"));
    assert!(!twice.spellings_are_unique());
    // A learned "aa" and a special token named "aa".
    let shared = Tokenizer::from_merges(vec![(a, a)], names("aa"));
    assert!(!shared.spellings_are_unique());
    let unique = Tokenizer::from_merges(vec![(a, a), (aa, a)], names("<s>"));
    assert!(unique.spellings_are_unique());
}

fn assert_format_error(dir: &TempDir, name: &str, contents: &str, expected: &str) {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    match Tokenizer::load(&path) {
        Err(Error::Format {
            path: error_path,
            msg,
        }) => {
            assert_eq!(error_path, path);
            assert!(msg.contains(expected), "{name}: {msg:?} lacks {expected:?}");
        }
        other => panic!("{name}: expected a format error, got {other:?}"),
    }
}

fn tokenizer_json(version: u32, vocab_size: u64, merges: &str) -> String {
    format!(
        r#"{{"format":"tapegrad-bpe","version":{version},"vocab_size":{vocab_size},"special_tokens":[{{"name":"<s>","id":256}},{{"name":"</s>","id":257}}],"merges":{merges}}}"#
    )
}

#[test]
fn load_rejects_corrupt_files() {
    let dir = TempDir::new("tokenizer-corrupt");
    let good = tokenizer_json(1, 260, "[[104,101],[258,108]]");
    let path = dir.path().join("good.json");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(Tokenizer::load(&path).unwrap().decode(&[259]), b"hel");
    assert_format_error(
        &dir,
        "truncated.json",
        &good[..good.len() / 2],
        "invalid tokenizer json",
    );
    assert_format_error(&dir, "empty.json", "", "invalid tokenizer json");
    assert_format_error(
        &dir,
        "version.json",
        &tokenizer_json(7, 260, "[[104,101],[258,108]]"),
        "unsupported version 7",
    );
    assert_format_error(
        &dir,
        "unknown.json",
        &tokenizer_json(1, 260, "[[104,101],[259,108]]"),
        "does not exist yet",
    );
    assert_format_error(
        &dir,
        "special.json",
        &tokenizer_json(1, 259, "[[256,101]]"),
        "special token 256",
    );
    assert_format_error(
        &dir,
        "digit.json",
        &tokenizer_json(1, 259, "[[32,49]]"),
        "digit token 49",
    );
    assert_format_error(
        &dir,
        "repeat.json",
        &tokenizer_json(1, 260, "[[104,101],[104,101]]"),
        "repeats the pair",
    );
    assert_format_error(
        &dir,
        "size.json",
        &tokenizer_json(1, 300, "[[104,101]]"),
        "vocab_size 300",
    );
    assert_format_error(
        &dir,
        "negative.json",
        &tokenizer_json(1, 259, "[[-1,101]]"),
        "invalid tokenizer json",
    );
    assert_format_error(
        &dir,
        "format.json",
        &good.replace("tapegrad-bpe", "gpt2"),
        "unknown format",
    );
    // "aa" doubled seven times: a token of 256 bytes, the longest allowed; then one of 258.
    let mut long: Vec<String> = (0..8)
        .map(|i| {
            if i == 0 {
                "[97,97]".to_string()
            } else {
                format!("[{0},{0}]", 257 + i)
            }
        })
        .collect();
    let path = dir.path().join("longest.json");
    std::fs::write(
        &path,
        tokenizer_json(1, 266, &format!("[{}]", long.join(","))),
    )
    .unwrap();
    assert_eq!(Tokenizer::load(&path).unwrap().decode(&[265]), [b'a'; 256]);
    long.push("[265,258]".to_string());
    assert_format_error(
        &dir,
        "long.json",
        &tokenizer_json(1, 267, &format!("[{}]", long.join(","))),
        "a token of 258 bytes, longer than 256",
    );
    let missing = Tokenizer::load(dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
}

#[test]
fn special_tokens_must_be_bos_then_eos_with_distinct_names() {
    let special = |name: &str, id: u32| SpecialToken {
        name: name.to_string(),
        id,
    };
    let check = |specials: &[SpecialToken]| validate_special_tokens(specials);
    assert_eq!(
        check(&[special("<s>", 256), special("</s>", 257)]).unwrap(),
        ["<s>", "</s>"]
    );
    assert!(check(&[special("<s>", 256)])
        .unwrap_err()
        .contains("found 1"));
    for (bos, eos) in [(255, 257), (256, 258), (257, 256)] {
        let error = check(&[special("<s>", bos), special("</s>", eos)]).unwrap_err();
        assert!(error.contains(&format!("are {bos} and {eos}")), "{error}");
    }
    for (bos, eos) in [("", "</s>"), ("<s>", ""), ("<s>", "<s>")] {
        let error = check(&[special(bos, 256), special(eos, 257)]).unwrap_err();
        assert!(
            error.contains("non-empty and distinct"),
            "{bos:?} {eos:?}: {error}"
        );
    }
}

fn arbitrary_text() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b"the ".to_vec()),
        Just(b"queen".to_vec()),
        Just(b"  ".to_vec()),
        Just(b"\n".to_vec()),
        Just("café".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(pieces, 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn round_trips_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let tokenizer = small_tokenizer();
        prop_assert_eq!(tokenizer.decode(&tokenizer.encode(&bytes)), bytes);
    }

    #[test]
    fn round_trips_arbitrary_strings(text in any::<String>()) {
        let tokenizer = small_tokenizer();
        prop_assert_eq!(tokenizer.decode_lossy(&tokenizer.encode(text.as_bytes())), text);
    }

    #[test]
    fn round_trips_word_like_bytes(bytes in arbitrary_text()) {
        let tokenizer = small_tokenizer();
        let ids = tokenizer.encode(&bytes);
        prop_assert_eq!(tokenizer.decode(&ids), bytes);
        for &id in &ids {
            let token = tokenizer.token_bytes(id);
            prop_assert!(!token.iter().any(u8::is_ascii_digit) || token.len() == 1);
        }
    }

    #[test]
    fn chunks_cover_the_input(bytes in arbitrary_text()) {
        let chunks: Vec<&[u8]> = pre_tokenize(&bytes).collect();
        prop_assert!(chunks.iter().all(|chunk| !chunk.is_empty()));
        prop_assert_eq!(chunks.concat(), bytes.clone());
        let pieces = split_at_chunk_starts(&bytes, 7);
        let piecewise: Vec<&[u8]> = pieces.iter().flat_map(|piece| pre_tokenize(piece)).collect();
        prop_assert_eq!(piecewise, chunks);
    }

    #[test]
    fn queue_merging_matches_scanning(bytes in arbitrary_text()) {
        let tokenizer = small_tokenizer();
        let mut scanned: Vec<u32> = bytes.iter().map(|&b| u32::from(b)).collect();
        let mut queued = scanned.clone();
        tokenizer.merge_by_scanning(&mut scanned);
        tokenizer.merge_with_queue(&mut queued);
        prop_assert_eq!(scanned, queued);
    }
}

#[test]
fn long_texts_are_cut_at_the_first_line_start_past_each_piece() {
    // Lines start at 0, 8, 14, 26 and 30 of every 30 bytes; those after "three\n" begin with spaces.
    let text = b"one two\nthree\n  four five\nsix\n".repeat(3);
    let pieces = split_at_chunk_starts(&text, 10);
    assert_eq!(pieces.concat(), text);
    let cuts: Vec<usize> = pieces
        .iter()
        .scan(0, |end, piece| {
            *end += piece.len();
            Some(*end)
        })
        .collect();
    // Each cut is the first line start at least 10 bytes into its piece that holds no whitespace; the last
    // piece is shorter than 10 bytes.
    assert_eq!(cuts, [26, 38, 56, 68, 86, 90]);
    assert_eq!(split_at_chunk_starts(&text, 90), [&text[..]]);
    assert_eq!(split_at_chunk_starts(b"", 10), [b""]);
}

#[test]
fn the_chunk_cache_keeps_short_chunks_up_to_its_capacity() {
    let long = vec![b'a'; CACHED_CHUNK_BYTES + 1];
    // More distinct 4-byte chunks than the cache holds.
    let many: Vec<u8> = (0..CACHE_CAPACITY as u32 + 8)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let mut encoder = ChunkEncoder::new(small_tokenizer());
    let mut ids = Vec::new();
    encoder.encode_chunk(&long, &mut ids);
    assert_eq!(encoder.cache.len(), 0, "a chunk past the cached length");
    encoder.encode_chunk(&long[..CACHED_CHUNK_BYTES], &mut ids);
    assert_eq!(encoder.cache.len(), 1, "a chunk of the cached length");
    for chunk in many.chunks(4) {
        ids.clear();
        encoder.encode_chunk(chunk, &mut ids);
    }
    assert_eq!(encoder.cache.len(), CACHE_CAPACITY);
}

#[test]
fn each_kind_of_key_hashes_apart_in_a_tables_low_bits() {
    type Write<'a> = &'a dyn Fn(&mut TableHasher, u64);
    let spread = |keys: std::ops::Range<u64>, write: Write| {
        let hashes: Vec<u64> = keys
            .clone()
            .map(|key| {
                let mut hasher = TableHasher::default();
                write(&mut hasher, key);
                hasher.finish()
            })
            .collect();
        let (distinct, low) = crate::data::hash_spread(&hashes);
        assert_eq!(
            distinct as u64,
            keys.end - keys.start,
            "every key its own hash"
        );
        low
    };
    let bytes = |key: u64, len: usize| {
        let mut b = vec![b'x'; len];
        b[len - 3..].copy_from_slice(&key.to_le_bytes()[..3]);
        b
    };
    assert_eq!(spread(0..256, &|h, k| h.write_u8(k as u8)), 256);
    let wide: [(&str, Write); 5] = [
        ("u32", &|h, k| h.write_u32(k as u32)),
        ("u64", &|h, k| h.write_u64(k << 40 | k)),
        ("usize", &|h, k| h.write_usize(k as usize)),
        ("three bytes", &|h, k| h.write(&bytes(k, 3))),
        ("eleven bytes", &|h, k| h.write(&bytes(k, 11))),
    ];
    for (kind, write) in wide {
        let low = spread(0..65_536, write);
        assert!(low > 30_000, "{kind}: {low} distinct low 16 bits of 65,536");
    }
}
