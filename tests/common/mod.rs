//! The one helper every op test uses: forward against a reference, and tape gradients against central finite
//! differences in f64.
#![allow(dead_code)]

use tapegrad::io::gguf::GgmlType;
use tapegrad::{DType, QuantMatrix, Rng, Tape, Tensor};

/// How a test input is presented to an op: as is, or as a non-contiguous view of a larger base tensor.
#[derive(Clone, Copy, Debug)]
pub enum View {
    Contiguous,
    /// The base holds the last two dims swapped; the op sees its transpose.
    Transposed,
    /// The base is two rows longer along dim 0; the op sees the middle.
    Narrowed,
}

impl View {
    pub fn from_index(i: u8) -> View {
        match i % 3 {
            0 => View::Contiguous,
            1 => View::Transposed,
            _ => View::Narrowed,
        }
    }

    /// The base tensor's shape for an op input of `shape`.
    pub fn base_shape(self, shape: &[usize]) -> Vec<usize> {
        let mut s = shape.to_vec();
        match self {
            View::Transposed if s.len() >= 2 => {
                let n = s.len();
                s.swap(n - 1, n - 2)
            }
            View::Narrowed if !s.is_empty() => s[0] += 2,
            _ => {}
        }
        s
    }

    /// The op input seen through this view of `base`.
    pub fn apply(self, base: &Tensor, shape: &[usize]) -> tapegrad::Result<Tensor> {
        match self {
            View::Transposed if shape.len() >= 2 => base.transpose(-1, -2),
            View::Narrowed if !shape.is_empty() => base.narrow(0, 1, shape[0]),
            _ => Ok(base.clone()),
        }
    }
}

/// f64 values in `[low, high)` with `shape`, seeded.
pub fn values(shape: &[usize], low: f64, high: f64, seed: u64) -> Tensor {
    Tensor::uniform(shape, low, high, DType::F64, &mut Rng::new(seed))
}

/// `Σ f(inputs) ⊙ r` for fixed random weights `r`: a scalar whose gradient exercises every output element.
fn weighted(out: &Tensor, seed: u64) -> tapegrad::Result<Tensor> {
    let r = values(out.shape(), -1.0, 1.0, seed ^ 0x5eed);
    out.mul(&r)?.sum_all()
}

/// A forward computation over the inputs.
pub type Forward<'a> = &'a dyn Fn(&[Tensor]) -> tapegrad::Result<Tensor>;

/// Checks `f` at `inputs` (f64): the forward against `reference` when given, and the tape's gradient of every
/// input against central finite differences.
pub fn check_op(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> tapegrad::Result<Tensor>,
    reference: Option<Forward<'_>>,
) {
    // Every output buffer handed to a kernel starts as NaN, so an element a kernel leaves unwritten fails the
    // comparisons below.
    tapegrad::backend::cpu::recycle::poison_buffers(true);
    let seed = 17;
    let tape = Tape::new();
    let tracked: Vec<Tensor> = inputs.iter().map(|t| tape.watch(t)).collect();
    let out = f(&tracked).expect("forward");
    if let Some(reference) = reference {
        let expected = reference(inputs).expect("reference forward");
        assert_eq!(out.shape(), expected.shape());
        for (a, b) in out.to_f64_vec().iter().zip(expected.to_f64_vec()) {
            // Both are f64 and differ only in summation order: 1e-9 relative is generous.
            assert!(
                (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
                "forward {a} vs reference {b}"
            );
        }
    }
    let loss = weighted(&out, seed).unwrap();
    let grads = tape.backward(&loss).expect("backward");
    let eval = |xs: &[Tensor]| weighted(&f(xs).unwrap(), seed).unwrap().item().unwrap();
    // Central differences with h = 1e-5 in f64: truncation error ~ h² · |f'''| ≈ 1e-10 and rounding
    // ~ 1e-16 · |loss| / h ≈ 1e-10 for the losses here, so 1e-6 (relative above 1) is far from both.
    let h = 1e-5;
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(&tracked[i])
            .map(|g| g.to_f64_vec())
            .unwrap_or_else(|| vec![0.0; input.numel()]);
        let base = input.to_f64_vec();
        for e in 0..base.len() {
            let shifted = |delta: f64| {
                let mut v = base.clone();
                v[e] += delta;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_vec(v, input.shape()).unwrap();
                eval(&xs)
            };
            let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
            let a = analytic[e];
            assert!(
                (a - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
                "input {i} element {e}: tape {a} vs finite difference {numeric}"
            );
        }
    }
}

/// The first GPU, or `None` (printing why) when the build has no CUDA backend or the machine no GPU. With
/// `TAPEGRAD_REQUIRE_GPU=1` (set by scripts/gpu-check.sh) a missing GPU fails the test instead.
pub fn gpu_or_skip(test: &str) -> Option<tapegrad::Device> {
    let why = gpu_unavailable();
    match why {
        None => Some(tapegrad::Device::Cuda(0)),
        Some(why) => {
            assert!(
                std::env::var_os("TAPEGRAD_REQUIRE_GPU").is_none(),
                "{test}: a GPU is required but {why}"
            );
            eprintln!("{test}: skipped: {why}");
            None
        }
    }
}

#[cfg(feature = "cuda-backend")]
fn gpu_unavailable() -> Option<String> {
    tapegrad::backend::cuda::unavailable()
}

#[cfg(not(feature = "cuda-backend"))]
fn gpu_unavailable() -> Option<String> {
    Some("this build has no CUDA backend (build with --features cuda)".into())
}

/// How many blocks the first GPU's pool has taken from the driver so far (`None` without a CUDA backend).
#[cfg(feature = "cuda-backend")]
pub fn gpu_driver_allocations() -> Option<u64> {
    Some(tapegrad::backend::cuda::gpu(0).ok()?.memory().misses)
}

#[cfg(not(feature = "cuda-backend"))]
pub fn gpu_driver_allocations() -> Option<u64> {
    None
}

/// The first GPU when one can be used, silently.
pub fn gpu_or_skip_quiet() -> Option<tapegrad::Device> {
    gpu_unavailable()
        .is_none()
        .then_some(tapegrad::Device::Cuda(0))
}

/// The block formats a quantized weight may hold, with the byte offsets of each block's f16 scale fields.
pub const QUANT_FORMATS: [(GgmlType, &[usize]); 8] = [
    (GgmlType::Q8_0, &[0]),
    (GgmlType::Q4_0, &[0]),
    (GgmlType::Q4_1, &[0, 2]),
    (GgmlType::Q5_0, &[0]),
    (GgmlType::Q5_1, &[0, 2]),
    (GgmlType::Q4_K, &[0, 2]),
    (GgmlType::Q5_K, &[0, 2]),
    (GgmlType::Q6_K, &[208]),
];

/// A `[rows, cols]` weight of random blocks of `ty`: random quants and sub-block scales, each f16 scale field
/// set to ±[0.01, 0.1) so the values stay near those of a trained weight.
pub fn random_quant(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
    let scales = QUANT_FORMATS
        .iter()
        .find(|(t, _)| *t == ty)
        .expect("a block format")
        .1;
    let (block, bytes) = ty.block_layout().unwrap();
    let mut rng = Rng::new(seed);
    let mut data: Vec<u8> = (0..rows * cols / block * bytes)
        .map(|_| rng.below(256) as u8)
        .collect();
    for b in data.chunks_exact_mut(bytes) {
        for &at in scales {
            let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
            let v = half::f16::from_f64(sign * (0.01 + 0.09 * rng.uniform()));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    QuantMatrix::from_blocks(ty, rows, cols, data).expect("a whole number of blocks")
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF (`scripts/fetch-models.sh`; `TAPEGRAD_MODELS` names its folder when the
/// tests run outside this checkout). Without it the caller's test says why it skips, and under CI (`CI` set)
/// a missing model is a failure, so the check never silently disappears.
pub fn smollm2_path() -> Option<std::path::PathBuf> {
    fetched(
        "TAPEGRAD_MODELS",
        "models",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "fetch-models.sh",
    )
}

/// The evaluation data of `scripts/fetch-evals.sh` (`TAPEGRAD_EVALS` names its folder), as
/// [`smollm2_path`] finds the model.
pub fn evals_dir() -> Option<std::path::PathBuf> {
    let complete = fetched("TAPEGRAD_EVALS", "evals", ".complete", "fetch-evals.sh")?;
    complete.parent().map(std::path::Path::to_path_buf)
}

/// The folder of a Hugging Face tokenizer fetched by `scripts/fetch-tokenizers.sh` (`llama-2`, `llama-3`;
/// `TAPEGRAD_TOKENIZERS` names their folder), as [`smollm2_path`] finds the model.
pub fn tokenizer_dir(name: &str) -> Option<std::path::PathBuf> {
    let file = format!("{name}/tokenizer.json");
    let json = fetched(
        "TAPEGRAD_TOKENIZERS",
        "tokenizers",
        &file,
        "fetch-tokenizers.sh",
    )?;
    json.parent().map(std::path::Path::to_path_buf)
}

/// `file` in the folder `$var` names (default target/`folder`), made by scripts/`script`: missing, the test
/// skips saying so, or fails under CI.
fn fetched(var: &str, folder: &str, file: &str, script: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os(var).map_or_else(
        || {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(folder)
        },
        std::path::PathBuf::from,
    );
    let path = dir.join(file);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: run scripts/{script}",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing (run scripts/{script})",
        path.display()
    );
    None
}

/// A made-up evaluation folder in `scripts/fetch-evals.sh`'s layout, every task with three documents (MMLU: two
/// subjects of three test and five dev questions), in each source's own columns.
#[allow(dead_code)]
pub fn write_eval_fixture(dir: &std::path::Path) {
    use serde_json::json;
    use std::io::Write;
    let lines = |rel: &str, rows: &[serde_json::Value]| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(path, text).unwrap();
    };
    let olmo = |rel: &str, docs: &[serde_json::Value]| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        // One line per document and choice, as OLMo writes them, so each document appears several times.
        for (i, doc) in docs.iter().enumerate() {
            for idx in 0..doc["choices"].as_array().map_or(1, |c| c.len()) {
                let line = json!({"request_type": "loglikelihood", "doc": doc, "idx": idx, "doc_id": i,
                                  "request": {"context": "ignored", "continuation": " ignored"}});
                writeln!(gz, "{line}").unwrap();
            }
        }
        gz.finish().unwrap();
    };
    let three = |f: &dyn Fn(usize) -> serde_json::Value| (0..3).map(f).collect::<Vec<_>>();
    lines(
        "hf/hellaswag/none/validation.jsonl",
        &three(&|i| {
            json!({"activity_label": "Cooking", "ctx_a": format!("A cook heats pan {i}. [step]"), "ctx_b": "she ADDS",
                   "endings": ["oil to it.", "a [title] cat.", "the moon.", "water."], "label": format!("{}", i % 4)})
        }),
    );
    lines(
        "hf/piqa/plain_text/validation.jsonl",
        &three(
            &|i| json!({"goal": format!("Open jar {i}"), "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}),
        ),
    );
    lines(
        "hf/winogrande/winogrande_xl/validation.jsonl",
        &three(&|i| {
            json!({"sentence": format!("Ann beat Bo {i} times so _ won."), "option1": "Ann", "option2": "Bo",
                   "answer": "1"})
        }),
    );
    lines(
        "hf/boolq/none/validation.jsonl",
        &three(
            &|i| json!({"question": format!("is {i} even"), "passage": "Numbers.", "answer": i % 2 == 0}),
        ),
    );
    lines(
        "hf/social_i_qa/none/validation.jsonl",
        &three(&|i| {
            json!({"context": format!("Kai ran {i} miles."), "question": "How does Kai feel?", "answerA": "tired",
                   "answerB": "blue", "answerC": "tall", "label": "1"})
        }),
    );
    for task in ["arc_easy", "arc_challenge", "openbookqa"] {
        olmo(
            &format!("oe/{task}/test_rc_5shot/requests.jsonl.gz"),
            &three(&|i| {
                json!({"id": format!("q{i}"), "query": format!("Question: What is {i}?\nAnswer:"),
                       "choices": ["a number", "a color", "a sound"], "gold": 0})
            }),
        );
    }
    olmo(
        "oe/lambada/bpb_0shot/requests.jsonl.gz",
        &three(
            &|i| json!({"id": i, "query": format!("She said hello to her friend number {i}, whose name was"), "answers_text": ["Anna"], "choices": ["Anna"]}),
        ),
    );
    for subject in ["high_school_physics", "anatomy"] {
        for (split, n) in [("test", 3), ("dev", 5)] {
            let rows: Vec<_> = (0..n)
                .map(|i| {
                    json!({"question": format!("{subject} {split} {i}?"), "subject": subject,
                                 "choices": ["w", "x", "y", "z"], "answer": i % 4})
                })
                .collect();
            lines(
                &format!("hf/hails/mmlu_no_train/{subject}/{split}.jsonl"),
                &rows,
            );
        }
    }
    std::fs::write(dir.join(".complete"), "").unwrap();
}
