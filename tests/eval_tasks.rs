//! The benchmarks of `llama::tasks`: every task read from files in its source's layout into the harness's
//! prompts, clear errors for missing and broken files, the real splits' sizes, and SmolLM2 scored both ways
//! (shared prefixes through the KV cache, whole requests in batches) with the same picks.

mod common;

use std::path::PathBuf;
use tapegrad::llama::pretrained::{load_pretrained_with, Quantization};
use tapegrad::llama::tasks::score::{encode, score_batched, PrefixScorer};
use tapegrad::llama::tasks::{self, Options, Task};

fn fixture(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapegrad-evals-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::write_eval_fixture(&dir);
    dir
}

#[test]
fn every_task_reads_its_source_layout_into_the_harness_prompts() {
    let dir = fixture("prompts");
    for task in Task::ALL {
        let docs = tasks::load(task, &dir, task.default_shots(), None).unwrap();
        let expected = if task == Task::Mmlu { 6 } else { 3 };
        assert_eq!(docs.len(), expected, "{}", task.name());
        assert_eq!(Task::parse(task.name()).unwrap(), task);
        for doc in &docs {
            assert!(doc.gold < doc.requests.len().max(1), "{}", task.name());
        }
    }
    let load = |task| tasks::load(task, &dir, task.default_shots(), None).unwrap();
    let hellaswag = &load(Task::Hellaswag)[1];
    assert_eq!(
        hellaswag.requests[0].0,
        "Cooking: A cook heats pan 1. She adds"
    );
    assert_eq!(hellaswag.requests[1].1, " a. cat.");
    assert_eq!(hellaswag.gold, 1);
    let arc = &load(Task::ArcEasy)[2];
    assert_eq!(
        arc.requests[0],
        ("Question: What is 2?\nAnswer:".into(), " a number".into())
    );
    assert_eq!(load(Task::Openbookqa)[0].requests[0].0, "What is 0?");
    let lambada = &load(Task::Lambada)[0];
    assert_eq!(
        lambada.requests,
        [(
            "She said hello to her friend number 0, whose name was".into(),
            " Anna".into()
        )]
    );
    assert_eq!(
        load(Task::Winogrande)[0].requests[1].0,
        "Ann beat Bo 0 times so Bo"
    );
    assert_eq!(load(Task::Boolq)[1].gold, 0, "1 is not even: no");
    assert_eq!(load(Task::Siqa)[0].gold, 0, "SIQA's labels count from 1");
    // MMLU: subjects in name order, each question after its subject's five answered dev questions.
    let mmlu = load(Task::Mmlu);
    assert_eq!((mmlu[0].group, mmlu[3].group), (0, 1));
    let context = &mmlu[0].requests[0].0;
    assert!(context.starts_with("The following are multiple choice questions (with answers) about anatomy.\n\nanatomy dev 0?\nA. w"));
    assert_eq!(context.matches("\nAnswer:").count(), 6);
    assert!(context.ends_with("anatomy test 0?\nA. w\nB. x\nC. y\nD. z\nAnswer:"));
    let zero = tasks::load(Task::Mmlu, &dir, 0, Some(1)).unwrap();
    assert_eq!(zero.len(), 2, "the limit is per subject");
    assert!(zero[0].requests[0]
        .0
        .ends_with("about anatomy.\n\nanatomy test 0?\nA. w\nB. x\nC. y\nD. z\nAnswer:"));
    assert_eq!(tasks::load(Task::Piqa, &dir, 0, Some(2)).unwrap().len(), 2);
    assert_eq!(
        tasks::parse_list("piqa, social_iqa,piqa").unwrap(),
        [Task::Piqa, Task::Siqa]
    );
    assert_eq!(tasks::parse_list("all").unwrap().len(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_and_broken_task_files_are_errors_naming_the_file() {
    let dir = fixture("errors");
    let err = tasks::parse_list("piqa,hellaswagg")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown task \"hellaswagg\""), "{err}");
    let err = tasks::load(Task::Piqa, &dir, 1, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("training split"), "{err}");
    let err = tasks::load(Task::Mmlu, &dir, 6, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dev.jsonl") && err.contains("6 shots"),
        "{err}"
    );
    let piqa = dir.join(Task::Piqa.file());
    let good = std::fs::read_to_string(&piqa).unwrap();
    for (broken, says) in [
        (
            good.replace("\"sol2\"", "\"sol3\""),
            "has no field \"sol2\"",
        ),
        (
            good.replace("\"label\":0", "\"label\":7"),
            "answer 7 is not one of the 2 choices",
        ),
        (
            good.replace("\"label\":0", "\"label\":\"x\""),
            "field \"label\" is not an index",
        ),
        (
            good[..good.len() - 20].to_string(),
            "line 3: not a JSON row",
        ),
        (String::new(), "holds no rows"),
    ] {
        std::fs::write(&piqa, broken).unwrap();
        let err = tasks::load(Task::Piqa, &dir, 0, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(says) && err.contains("validation.jsonl"),
            "{says}: {err}"
        );
    }
    let arc = dir.join(Task::ArcEasy.file());
    std::fs::write(&arc, b"not gzip").unwrap();
    let err = tasks::load(Task::ArcEasy, &dir, 0, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a gzip file") && err.contains("requests.jsonl.gz"),
        "{err}"
    );
    std::fs::remove_file(&arc).unwrap();
    let err = tasks::load(Task::ArcEasy, &dir, 0, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/fetch-evals.sh"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_fetched_splits_have_the_sizes_the_harness_scores() {
    let Some(dir) = common::evals_dir() else {
        return;
    };
    for (task, n) in [
        (Task::Hellaswag, 10_042),
        (Task::Piqa, 1_838),
        (Task::ArcEasy, 2_376),
        (Task::ArcChallenge, 1_172),
        (Task::Winogrande, 1_267),
        (Task::Boolq, 3_270),
        (Task::Openbookqa, 500),
        (Task::Siqa, 1_954),
        (Task::Lambada, 5_153),
        (Task::Mmlu, 14_042),
    ] {
        let docs = tasks::load(task, &dir, task.default_shots(), None).unwrap();
        assert_eq!(docs.len(), n, "{}", task.name());
    }
}

#[test]
fn smollm2_beats_chance_and_scores_alike_both_ways() {
    let (Some(model_path), Some(dir)) = (common::smollm2_path(), common::evals_dir()) else {
        return;
    };
    let (model, tokenizer) = load_pretrained_with(&model_path, Quantization::Keep).unwrap();
    let tokenizer = tokenizer.unwrap();
    for (task, limit, at_least) in [(Task::Piqa, 24, 0.6), (Task::ArcEasy, 16, 0.4)] {
        let docs = tasks::load(task, &dir, 0, Some(limit)).unwrap();
        let run = |shared_prefix| {
            let options = Options {
                batch: 4,
                shared_prefix,
            };
            tasks::evaluate(&model, &tokenizer, task, &docs, options, &mut || {}).unwrap()
        };
        let (cached, whole) = (run(true), run(false));
        assert_eq!(
            (cached.acc, cached.acc_norm),
            (whole.acc, whole.acc_norm),
            "{}",
            task.name()
        );
        assert!(
            cached.acc >= at_least,
            "{}: acc {}",
            task.name(),
            cached.acc
        );
        assert_eq!(cached.n, limit);
    }
    // Each request's log-likelihood, not only the picks, agrees between the two ways (over dense weights: over
    // quantized ones a single-position step multiplies 8-bit activations, as decoding does).
    let (model, _) = load_pretrained_with(&model_path, Quantization::Dense).unwrap();
    let docs = tasks::load(Task::Piqa, &dir, 0, Some(4)).unwrap();
    let requests: Vec<Vec<_>> = docs
        .iter()
        .map(|d| {
            d.requests
                .iter()
                .map(|(c, x)| encode(&tokenizer, c, x, model.config.max_seq_len).unwrap())
                .collect()
        })
        .collect();
    let mut scorer = PrefixScorer::new(&model, 4);
    let shared: Vec<_> = requests
        .iter()
        .flat_map(|r| scorer.score(r).unwrap())
        .collect();
    let flat: Vec<_> = requests.into_iter().flatten().collect();
    for (s, w) in shared
        .iter()
        .zip(score_batched(&model, &flat, 3).unwrap().0)
    {
        let tolerance = 1e-4 * w.log_likelihood.abs();
        assert!(
            (s.log_likelihood - w.log_likelihood).abs() < tolerance,
            "{s:?} {w:?}"
        );
        assert_eq!(s.greedy, w.greedy);
    }
}
