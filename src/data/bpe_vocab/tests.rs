//! Tests of `bpe_vocab`.

use super::*;

fn smollm2() -> Option<VocabTokenizer> {
    let path = crate::io::gguf::tests::smollm2_gguf()?;
    let g = Gguf::open(&path).unwrap();
    Some(VocabTokenizer::from_gguf(&g).unwrap())
}

fn split(pre: PreTokenizer, s: &str) -> Vec<&str> {
    let parts = pre.split(s);
    assert_eq!(parts.concat(), s);
    parts
}

#[test]
fn gpt2_pattern_splits() {
    let g = PreTokenizer::Gpt2;
    assert_eq!(split(g, "Hello world"), ["Hello", " world"]);
    assert_eq!(
        split(g, "I'm sure they'll say it's 'ok'"),
        ["I", "'m", " sure", " they", "'ll", " say", " it", "'s", " '", "ok", "'"]
    );
    assert_eq!(split(g, "  hi"), [" ", " hi"]);
    assert_eq!(split(g, "a\n\nb"), ["a", "\n", "\n", "b"]);
    assert_eq!(split(g, "end   "), ["end", "   "]);
    assert_eq!(split(g, "x \t y"), ["x", " \t", " y"]);
    assert_eq!(
        split(g, "pi = 3.14159!"),
        ["pi", " =", " 3", ".", "14159", "!"]
    );
    assert_eq!(split(g, "def f(n):"), ["def", " f", "(", "n", "):"]);
    assert_eq!(split(g, "l'été über"), ["l", "'", "été", " über"]);
    assert_eq!(split(g, "x'RE 're"), ["x", "'", "RE", " '", "re"]);
    assert_eq!(split(g, "日本語 テキスト"), ["日本語", " テキスト"]);
    assert_eq!(split(g, "😀😀 ok"), ["😀😀", " ok"]);
    assert!(split(g, "").is_empty());
}

#[test]
fn individual_digit_splits() {
    let d = PreTokenizer::Gpt2IndividualDigits;
    assert_eq!(
        split(d, "in 2024, x1"),
        ["in", " ", "2", "0", "2", "4", ",", " x", "1"]
    );
    assert_eq!(split(d, "٣٤"), ["٣", "٤"]);
    assert_eq!(PreTokenizer::from_name("smollm"), Some(d));
    assert_eq!(PreTokenizer::from_name("qwen2"), None);
}

#[test]
fn llama3_splits_as_its_pattern_says() {
    let l = PreTokenizer::Llama3;
    assert_eq!(PreTokenizer::from_name("llama-bpe"), Some(l));
    assert_eq!(PreTokenizer::from_name(l.name()), Some(l));
    // Contractions in any case; a letter run takes one non-letter, non-number char before it.
    assert_eq!(
        split(l, "I'M you'Re x'll"),
        ["I", "'M", " you", "'Re", " x", "'ll"]
    );
    assert_eq!(split(l, "!hello\tworld"), ["!hello", "\tworld"]);
    // Numbers in threes; a space before a number stands alone.
    assert_eq!(split(l, "12345 678"), ["123", "45", " ", "678"]);
    // Punctuation with an optional space before and line breaks after.
    assert_eq!(split(l, "a .,;\n\nb"), ["a", " .,;\n\n", "b"]);
    // Whitespace up to its last line break; a run before text leaves its last char.
    assert_eq!(split(l, "a \n  \n  b"), ["a", " \n  \n", " ", " b"]);
    assert_eq!(split(l, "a   b  "), ["a", "  ", " b", "  "]);
    // Combining marks are not letters (\p{L}): they go with the punctuation rule.
    assert_eq!(split(l, "e\u{301}x"), ["e", "\u{301}x"]);
    assert!(split(l, "").is_empty());
}

#[test]
fn our_chunks_split_text_at_the_same_places() {
    let t = PreTokenizer::Tapegrad;
    assert_eq!(PreTokenizer::from_name(t.name()), Some(t));
    assert_eq!(
        split(t, "Hi  there, 42é!"),
        ["Hi", " ", " there", ",", " 4", "2", "é", "!"]
    );
}

#[test]
fn byte_table_is_gpt2s() {
    let t = byte_to_char_table();
    assert_eq!(t[b' ' as usize], 'Ġ');
    assert_eq!(t[b'\n' as usize], 'Ċ');
    assert_eq!(t[b'a' as usize], 'a');
    assert_eq!(t[0], 'Ā');
    assert_eq!(t[0xa0], 'ł');
    assert_eq!(t[0xad], 'Ń');
    let mut sorted = t.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 256);
}

fn strings(xs: &[&str]) -> Value {
    Value::Array(xs.iter().map(|s| Value::String((*s).into())).collect())
}

/// A toy byte-level vocabulary: all 256 byte tokens, then merges for "he", "ll", "hell", "hello", "Ġw".
fn toy_gpt2() -> VocabTokenizer {
    let table = byte_to_char_table();
    let mut tokens: Vec<String> = vec!["<|end|>".into()];
    tokens.extend(table.iter().map(|c| c.to_string()));
    for t in ["he", "ll", "hell", "hello", "Ġw", "Ġwo"] {
        tokens.push(t.into());
    }
    let mut types = vec![Value::I32(token_type::NORMAL); tokens.len()];
    types[0] = Value::I32(token_type::CONTROL);
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    m.insert("tokenizer.ggml.pre".into(), Value::String("gpt-2".into()));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    m.insert(
        "tokenizer.ggml.merges".into(),
        strings(&["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "x y"]),
    );
    m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(0));
    VocabTokenizer::from_metadata(&m, "toy.gguf").unwrap()
}

#[test]
fn toy_gpt2_encode_decode() {
    let t = toy_gpt2();
    assert_eq!(t.model(), TokenizerModel::Gpt2);
    assert_eq!(
        (t.eos_id(), t.bos_id(), t.vocab_size()),
        (Some(0), None, 263)
    );
    let ids = t.encode("hello world");
    let spelled: Vec<&str> = ids.iter().map(|&i| t.token(i).unwrap()).collect();
    assert_eq!(spelled, ["hello", "Ġwo", "r", "l", "d"]);
    assert_eq!(t.decode(&ids), "hello world");
    let text = "héllo\n\t<|end|> 12 ÿ\u{0}";
    assert_eq!(t.decode(&t.encode(text)), text);
    assert_eq!(t.encode("<|end|>").len(), 7);
    assert_eq!(
        t.encode_with_special("a<|end|>b"),
        [t.encode("a")[0], 0, t.encode("b")[0]]
    );
    assert_eq!(t.decode(&[0, 9999]), "<|end|>\u{fffd}");
    assert!(t.encode("").is_empty());
}

#[test]
fn long_pieces_merge_like_short_ones() {
    let t = toy_gpt2();
    let Model::Bpe(bpe) = &t.model else {
        unreachable!()
    };
    let word = "hellohehellollhhello".repeat(5);
    let initial: Vec<u32> = word
        .bytes()
        .map(|b| bpe.byte_ids[b as usize].unwrap())
        .collect();
    let mut short = initial.clone();
    bpe.merge_short(&mut short);
    let mut long = initial;
    bpe.merge_long(&mut long);
    assert_eq!(short, long);
    assert_eq!(t.decode(&long), word);
    assert_eq!(t.encode(&word), long);
}

#[test]
fn the_piece_cache_keeps_pieces_until_its_limit_then_starts_again() {
    let t = toy_gpt2();
    let Model::Bpe(bpe) = &t.model else {
        unreachable!()
    };
    let cached = || bpe.cache.lock().unwrap().len();
    let first = t.encode("hello hello world");
    assert_eq!(cached(), 3, "\"hello\", \" hello\" and \" world\"");
    assert_eq!(
        t.encode("hello hello world"),
        first,
        "the same ids from the cache"
    );
    // Distinct pieces of letters (" ba", " bb", ...) up to exactly the limit, then one more.
    let word = |mut i: usize| {
        let mut w = String::from(" b");
        while i > 0 {
            w.push(char::from(b'a' + (i % 26) as u8));
            i /= 26;
        }
        w
    };
    let fill: String = (1..=CACHE_LIMIT - 3).map(word).collect();
    t.encode(&fill);
    assert_eq!(cached(), CACHE_LIMIT);
    let ids = t.encode(" zz");
    assert_eq!(cached(), 1, "cleared at the limit, then the new piece");
    assert_eq!(t.decode(&ids), " zz");
}

#[test]
fn bad_metadata_is_an_error() {
    let mut m = BTreeMap::new();
    assert!(VocabTokenizer::from_metadata(&m, "x.gguf").is_err());
    m.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
    m.insert("tokenizer.ggml.tokens".into(), strings(&["a"]));
    let e = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("x.gguf: unsupported tokenizer.ggml.model"),
        "{e}"
    );
    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    assert!(
        VocabTokenizer::from_metadata(&m, "x.gguf").is_err(),
        "merges missing"
    );
    m.insert("tokenizer.ggml.merges".into(), strings(&["a"]));
    assert!(
        VocabTokenizer::from_metadata(&m, "x.gguf").is_err(),
        "bad merge"
    );
    m.insert("tokenizer.ggml.merges".into(), strings(&[]));
    m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(5));
    let e = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    m.insert("tokenizer.ggml.bos_token_id".into(), Value::I32(-1));
    m.insert("tokenizer.ggml.token_type".into(), Value::Array(vec![]));
    assert!(VocabTokenizer::from_metadata(&m, "x.gguf").is_err());
    m.remove("tokenizer.ggml.token_type");
    m.insert("tokenizer.ggml.pre".into(), Value::String("qwen2".into()));
    assert!(VocabTokenizer::from_metadata(&m, "x.gguf").is_err());
    m.insert("tokenizer.ggml.pre".into(), Value::String("gpt-2".into()));
    let t = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap();
    assert_eq!(t.bos_id(), None);
    // Bytes without a token and no unknown token are dropped rather than panicking.
    assert_eq!(t.encode("a!"), [0]);
}

/// A toy SentencePiece vocabulary: control tokens, some pieces with scores, byte fallback for 'é' only
/// partly (its two bytes), and no byte token for '€'.
fn toy_spm(add_space_prefix: bool) -> VocabTokenizer {
    let mut entries: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, token_type::UNKNOWN),
        ("<s>".into(), 0.0, token_type::CONTROL),
        ("</s>".into(), 0.0, token_type::CONTROL),
    ];
    for b in [0xc3u8, 0xa9] {
        entries.push((format!("<0x{b:02X}>"), 0.0, token_type::BYTE));
    }
    for (t, s) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("t", -2.0),
        ("he", -3.0),
        ("ll", -4.0),
        ("llo", -5.0),
        ("hello", -6.0),
        ("▁hello", -7.0),
        ("▁w", -8.0),
        ("or", -9.0),
        ("▁wor", -10.0),
        ("ld", -11.0),
        ("▁▁", -12.0),
        ("▁t", -13.0),
        ("<s", -1.0),
    ] {
        entries.push((t.into(), s, token_type::NORMAL));
    }
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(entries.iter().map(|e| Value::String(e.0.clone())).collect()),
    );
    m.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(entries.iter().map(|e| Value::F32(e.1)).collect()),
    );
    m.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(entries.iter().map(|e| Value::I32(e.2)).collect()),
    );
    m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
    m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
    m.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(0));
    m.insert(
        "tokenizer.ggml.add_space_prefix".into(),
        Value::Bool(add_space_prefix),
    );
    VocabTokenizer::from_metadata(&m, "toy-spm.gguf").unwrap()
}

fn spell(t: &VocabTokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| t.token(i).unwrap().to_owned())
        .collect()
}

#[test]
fn spm_encode_decode() {
    let t = toy_spm(true);
    assert_eq!(t.model(), TokenizerModel::Llama);
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    let ids = t.encode("hello world");
    assert_eq!(spell(&t, &ids), ["▁hello", "▁wor", "ld"]);
    assert_eq!(t.decode(&ids), "hello world");
    // 'é' is not a token: byte fallback. '€' has no byte tokens: unknown.
    let ids = t.encode("hé€");
    assert_eq!(
        spell(&t, &ids),
        ["▁", "h", "<0xC3>", "<0xA9>", "<unk>", "<unk>", "<unk>"]
    );
    assert_eq!(t.decode(&ids[..4]), "hé");
    // Highest score first: "he" (-3) beats "ll" (-4); then "hello" cannot form from "he"+"llo"? It can:
    // "he" + "llo" = "hello" (-6) once "llo" (-5) exists.
    assert_eq!(spell(&t, &t.encode("hello")), ["▁hello"]);
    assert_eq!(spell(&t, &t.encode("  t")), ["▁▁", "▁t"]);
    // Control tokens never form from text.
    assert_eq!(spell(&t, &t.encode("<s>")), ["▁", "<s", "<unk>"]);
    assert_eq!(t.encode_with_special("<s>hello"), [1, t.encode("hello")[0]]);
    assert_eq!(t.decode(&[1, 2]), "<s></s>");
    assert!(t.encode("").is_empty());
    for text in ["hello  world ", " he", "dr", "é", "ll o"] {
        assert_eq!(t.decode(&t.encode(text)), text, "round trip of {text:?}");
    }
}

#[test]
fn spm_without_space_prefix() {
    let t = toy_spm(false);
    assert_eq!(spell(&t, &t.encode("hello world")), ["hello", "▁wor", "ld"]);
    assert_eq!(t.decode(&t.encode(" hello")), " hello");
}

#[test]
fn spm_merges_leftmost_on_ties() {
    let t = toy_spm(true);
    // "ll" + "ll": both pairs score -4; the leftmost merges first, leaving "ll", "ll".
    assert_eq!(spell(&t, &t.encode("llll")), ["▁", "ll", "ll"]);
    assert_eq!(spell(&t, &t.encode("lll")), ["▁", "ll", "l"]);
}

/// The three reference prompts of the SmolLM2 fixture (tests/data/smollm2/expected.json).
const PROMPTS: [(&str, &[u32], &[u32], &str); 3] = [
    (
        "The capital of France is",
        &[504, 3575, 282, 4649, 314],
        &[7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33],
        " Paris.\n\nThe answer is: 201",
    ),
    (
        "Once upon a time, there was a little",
        &[6403, 1980, 253, 655, 28, 665, 436, 253, 1838],
        &[
            8180, 3365, 20391, 617, 5732, 288, 1238, 281, 260, 2388, 30, 2306,
        ],
        " girl named Emma who loved to play in the sun. She",
    ),
    (
        "def fibonacci(n):",
        &[1604, 3987, 46477, 24, 94, 727],
        &[472, 585, 304, 1758, 216, 32, 42, 448, 1003, 216, 33, 472],
        "\n    if n == 0:\n        return 1\n   ",
    ),
];

#[test]
fn smollm2_reference_prompts() {
    let Some(t) = smollm2() else { return };
    assert_eq!(t.model(), TokenizerModel::Gpt2);
    assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::Gpt2IndividualDigits));
    assert_eq!(
        (t.vocab_size(), t.bos_id(), t.eos_id()),
        (49152, Some(1), Some(2))
    );
    for (text, ids, greedy_ids, greedy_text) in PROMPTS {
        assert_eq!(t.encode(text), ids, "ids of {text:?}");
        assert_eq!(t.decode(ids), text);
        assert_eq!(t.decode(greedy_ids), greedy_text);
        assert_eq!(t.encode(greedy_text), greedy_ids, "ids of {greedy_text:?}");
    }
    let ids = t.encode_with_special("<|im_start|>user\nhi<|im_end|>");
    let spelled: Vec<&str> = ids.iter().map(|&i| t.token(i).unwrap()).collect();
    assert_eq!(spelled, ["<|im_start|>", "user", "Ċ", "hi", "<|im_end|>"]);
}

#[test]
fn smollm2_round_trips_and_speed() {
    let Some(t) = smollm2() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/austen.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let limit = if cfg!(debug_assertions) {
        1 << 18
    } else {
        text.len()
    };
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let t0 = std::time::Instant::now();
    let ids = t.encode(text);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "encode: {:.2} MB in {secs:.3} s = {:.1} MB/s, {} tokens ({:.2} bytes/token)",
        text.len() as f64 / 1e6,
        text.len() as f64 / 1e6 / secs,
        ids.len(),
        text.len() as f64 / ids.len() as f64
    );
    assert_eq!(t.decode(&ids), text);
    let tricky = "naïve café — 東京 😀\t\r\n  x1.5e-3 'quoted' don't\u{0}";
    assert_eq!(t.decode(&t.encode(tricky)), tricky);
}

proptest::proptest! {
    #[test]
    fn toy_round_trips(s in "\\PC{0,40}") {
        let t = toy_gpt2();
        proptest::prop_assert_eq!(t.decode(&t.encode(&s)), s.clone());
        let spm = toy_spm(false);
        let ids = spm.encode(&s);
        proptest::prop_assert!(ids.iter().all(|&i| (i as usize) < spm.vocab_size()));
        let g = PreTokenizer::Gpt2IndividualDigits.split(&s).concat();
        proptest::prop_assert_eq!(g, s);
    }
}

/// A byte-level vocabulary whose merges overlap: `y z` ranks before `x y`, so in "xyz" the later pair merges
/// first, and `z z` overlaps itself; `<u>` is a user-defined token (written as its spelling when decoded, like a control token).
fn overlapping_gpt2() -> VocabTokenizer {
    let table = byte_to_char_table();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    tokens.extend(["yz".into(), "xy".into(), "zz".into(), "<u>".into()]);
    let mut types = vec![Value::I32(token_type::NORMAL); tokens.len()];
    *types.last_mut().unwrap() = Value::I32(token_type::USER_DEFINED);
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    m.insert(
        "tokenizer.ggml.merges".into(),
        strings(&["y z", "x y", "z z"]),
    );
    VocabTokenizer::from_metadata(&m, "overlap.gguf").unwrap()
}

#[test]
fn the_lowest_rank_merges_first_and_ties_go_leftmost_in_both_merge_loops() {
    let t = overlapping_gpt2();
    let Model::Bpe(bpe) = &t.model else {
        unreachable!()
    };
    let (xy, yz, zz) = (
        t.token_id("xy").unwrap(),
        t.token_id("yz").unwrap(),
        t.token_id("zz").unwrap(),
    );
    let ids = |s: &str| -> Vec<u32> {
        s.bytes()
            .map(|b| bpe.byte_ids[b as usize].unwrap())
            .collect()
    };
    let (x, y, z) = (ids("x")[0], ids("y")[0], ids("z")[0]);
    // "xyz": `y z` (rank 0) before `x y` (rank 1), though `x y` comes first. "yzyz..." and "xyxy...": one
    // rank everywhere, merged left to right. The long loop is checked on the same words, long and short.
    let cases: [(&str, Vec<u32>); 6] = [
        ("zzz", vec![zz, z]),
        ("zzzzz", vec![zz, zz, z]),
        ("xyz", vec![x, yz]),
        ("zxyzxy", vec![z, x, yz, xy]),
        ("yyz", vec![y, yz]),
        ("xyxyx", vec![xy, xy, x]),
    ];
    for (word, want) in cases {
        let (mut short, mut long) = (ids(word), ids(word));
        bpe.merge_short(&mut short);
        bpe.merge_long(&mut long);
        assert_eq!(short, want, "short merges of {word}");
        assert_eq!(long, want, "long merges of {word}");
        assert_eq!(t.encode(word), want, "{word}");
    }
    // A piece long enough for the heap, with the overlap at both ends.
    let word = format!("xyz{}xyz", "xyzz".repeat(40));
    let (mut short, mut long) = (ids(&word), ids(&word));
    bpe.merge_short(&mut short);
    bpe.merge_long(&mut long);
    assert_eq!(long, short);
    assert_eq!(&long[..2], [x, yz]);
    assert_eq!(t.decode(&long), word);
}

#[test]
fn lookups_answer_what_the_vocabulary_says() {
    let t = toy_gpt2();
    assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::Gpt2));
    assert_eq!(toy_spm(true).pre_tokenizer(), None);
    assert_eq!(t.unk_id(), None);
    assert_eq!(toy_spm(true).unk_id(), Some(0));
    assert_eq!(t.token_id("<|end|>"), Some(0));
    let hello = t.token_id("hello").unwrap();
    assert_eq!(t.token(hello), Some("hello"));
    assert!(hello > 1);
    assert_eq!(t.token_id("no such token"), None);
    let o = overlapping_gpt2();
    let user = o.token_id("<u>").unwrap();
    // A user-defined token is written as its spelling, and encoded from it when specials are asked for.
    assert_eq!(o.decode(&[user]), "<u>");
    assert_eq!(
        o.encode_with_special("x<u>xx<u>"),
        [
            o.encode("x")[0],
            user,
            o.encode("x")[0],
            o.encode("x")[0],
            user
        ]
    );
    assert!(format!("{t:?}").contains("263"), "{t:?}");
}

/// A SentencePiece-style vocabulary of `entries` (spelling, type), every score −1, no space prefix.
fn spm_of(entries: &[(&str, i32)]) -> VocabTokenizer {
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    let tokens: Vec<&str> = entries.iter().map(|e| e.0).collect();
    m.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
    m.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(entries.iter().map(|_| Value::F32(-1.0)).collect()),
    );
    m.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(entries.iter().map(|e| Value::I32(e.1)).collect()),
    );
    m.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false));
    VocabTokenizer::from_metadata(&m, "spm.gguf").unwrap()
}

#[test]
fn sentencepiece_merges_only_into_normal_and_user_defined_tokens() {
    let t = spm_of(&[
        ("<unk>", token_type::UNKNOWN),
        ("a", token_type::NORMAL),
        ("b", token_type::NORMAL),
        ("ab", token_type::CONTROL),
        ("ba", token_type::USER_DEFINED),
        ("bb", token_type::UNUSED),
        ("aa", token_type::NORMAL),
    ]);
    assert_eq!(t.encode("ab"), [1, 2]);
    assert_eq!(t.encode("ba"), [4]);
    assert_eq!(t.encode("bb"), [2, 2]);
    assert_eq!(t.encode("aa"), [6]);
}

#[test]
fn sentencepiece_byte_spellings_decode_by_type() {
    let t = spm_of(&[
        ("<unk>", token_type::UNKNOWN),
        ("<0x41>", token_type::NORMAL),
        ("<0x42>", token_type::UNUSED),
        ("<0x43>", token_type::BYTE),
        ("▁", token_type::NORMAL),
        ("x", token_type::NORMAL),
        ("▁ctl", token_type::CONTROL),
        ("u▁", token_type::USER_DEFINED),
    ]);
    // Normal and byte tokens spelled `<0xNN>` are that byte; an unused one is its spelling.
    assert_eq!(t.decode(&[1, 3, 2]), "AC<0x42>");
    // Control and user-defined tokens are written as spelled: their `▁` stays.
    assert_eq!(t.decode(&[6, 5, 7]), "▁ctlxu▁");
    assert_eq!(t.decode(&[4, 5]), " x");
}

#[test]
fn token_ids_and_vocabularies_at_their_bounds() {
    assert!(!token_count_fits(0));
    assert!(token_count_fits(1) && token_count_fits(u32::MAX as usize));
    assert!(!token_count_fits(u32::MAX as usize + 1));
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    m.insert("tokenizer.ggml.merges".into(), strings(&[]));
    m.insert("tokenizer.ggml.tokens".into(), strings(&[]));
    let e = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap_err();
    assert!(e.to_string().contains("has 0 entries"), "{e}");
    m.insert("tokenizer.ggml.tokens".into(), strings(&["a", "b"]));
    // Ids 0 and 1 exist; 2, the vocabulary's size, does not.
    m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
    let e = VocabTokenizer::from_metadata(&m, "x.gguf").unwrap_err();
    assert!(
        e.to_string()
            .contains("token id 2, outside the vocabulary of 2"),
        "{e}"
    );
    m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(1));
    assert_eq!(
        VocabTokenizer::from_metadata(&m, "x.gguf")
            .unwrap()
            .eos_id(),
        Some(1)
    );
}
