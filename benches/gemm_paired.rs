//! GEMM throughput measured in interleaved rounds, for a ratio that a busy or drifting machine cannot bias.
//!
//! `cargo bench --bench gemm_paired` (optionally `-- SECONDS` per shape, 20 by default, and words that pick the
//! shapes whose name contains one, such as `256x256`). Each round times every
//! library once on the same shape, in an order that rotates from round to round, each timing long enough
//! (about 25 ms, whole products) to swamp the clock. A round's ratio is `gemm` crate time / tapegrad time, so a
//! slow spell of the machine hits both sides of a ratio alike; the report gives the median ratio with its
//! quartiles and the share of rounds tapegrad won, next to each library's median GFLOP/s. Where the CPU has
//! AVX512-BF16, ours with the products in bf16 (`ops::with_cpu_bf16`) takes part in the rounds as a fourth
//! library, with its ratio to our f32 product.

#[path = "common/gemm_cases.rs"]
mod common;

use common::{cases, Lib, Operands};
use std::time::{Duration, Instant};

/// The `q`-quantile of `v` (sorted in place), by nearest rank.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number is the seconds per shape.
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20.0);
    let picks: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    let threads = rayon::current_num_threads();
    println!(
        "GEMM, f32, {threads} threads, interleaved rounds, {seconds} s per shape; \
         ratio = gemm-crate time / tapegrad time per round"
    );
    let libs = Lib::available();
    let mut header = format!("{:<28} {:>6}", "shape (m x n x k)", "rounds");
    for lib in &libs {
        header += &format!(" {:>14}", lib.name());
    }
    header += &format!(" {:>7} {:>15} {:>6}", "ratio", "quartiles", "won");
    if libs.len() > 3 {
        header += &format!(" {:>9}", "bf16/f32");
    }
    println!("{header}");
    for case in cases() {
        let shape = format!("{} {}x{}x{}", case.name, case.m, case.n, case.k);
        if !picks.is_empty() && !picks.iter().any(|p| shape.contains(p.as_str())) {
            continue;
        }
        let mut ops = Operands::new(&case);
        let flop = 2.0 * (case.m * case.n * case.k) as f64;
        // Warm up every library and size one timing at about 25 ms.
        let mut reps = vec![1usize; libs.len()];
        for (i, &lib) in libs.iter().enumerate() {
            ops.run(&case, lib, threads);
            let t = Instant::now();
            ops.run(&case, lib, threads);
            let once = t.elapsed().as_secs_f64().max(1e-6);
            reps[i] = ((0.025 / once).ceil() as usize).max(1);
        }
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); libs.len()];
        let mut ratios = Vec::new();
        let start = Instant::now();
        let mut round = 0;
        while round < 10 || start.elapsed() < Duration::from_secs_f64(seconds) {
            let mut this = vec![0.0; libs.len()];
            for j in 0..libs.len() {
                let i = (round + j) % libs.len();
                let t = Instant::now();
                for _ in 0..reps[i] {
                    ops.run(&case, libs[i], threads);
                }
                this[i] = t.elapsed().as_secs_f64() / reps[i] as f64;
                secs[i].push(this[i]);
            }
            ratios.push(this[1] / this[0]);
            round += 1;
        }
        let won = ratios.iter().filter(|&&r| r >= 1.0).count() as f64 / ratios.len() as f64;
        let medians: Vec<f64> = secs.iter_mut().map(|s| quantile(s, 0.5)).collect();
        let mut line = format!("{:<28} {:>6}", shape, ratios.len());
        for s in &medians {
            line += &format!(" {:>14.1}", flop / s / 1e9);
        }
        line += &format!(
            " {:>7.3} {:>7.3}-{:<7.3} {:>5.0}%",
            quantile(&mut ratios, 0.5),
            quantile(&mut ratios, 0.25),
            quantile(&mut ratios, 0.75),
            100.0 * won
        );
        if libs.len() > 3 {
            line += &format!(" {:>9.2}", medians[0] / medians[3]);
        }
        println!("{line}");
    }
}
