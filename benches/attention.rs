//! Causal attention forward + backward: the fused kernel against the composed reference (matmul, mask,
//! softmax, matmul) at T = 256, 1024 and 4096 (B = 1, H = 8, D = 32, f32). Criterion times both; a counting
//! allocator reports the peak bytes each allocates above what was live before, printed as
//! `attention/T…: peak …` lines.
//!
//! `cargo bench --bench attention`

use criterion::{criterion_group, criterion_main, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tapegrad::ops::attention_reference;
use tapegrad::{DType, Rng, Tape, Tensor};

/// The system allocator, counting live and peak bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn run(q: &Tensor, k: &Tensor, v: &Tensor, fused: bool) {
    let tape = Tape::new();
    let (q, k, v) = (tape.watch(q), tape.watch(k), tape.watch(v));
    let out = if fused {
        q.attention(&k, &v)
    } else {
        attention_reference(&q, &k, &v)
    }
    .unwrap();
    let grads = tape.backward(&out.sum_all().unwrap()).unwrap();
    assert!(grads.get(&q).is_some());
}

/// Peak bytes allocated by one forward + backward, above those live before it.
fn peak_bytes(q: &Tensor, k: &Tensor, v: &Tensor, fused: bool) -> usize {
    // Buffers kept for reuse would hide allocations: free them, so every buffer of the call counts.
    tapegrad::backend::cpu::recycle::release_all();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    run(q, k, v, fused);
    PEAK.load(Ordering::Relaxed) - base
}

fn attention(c: &mut Criterion) {
    for t in [256usize, 1024, 4096] {
        let (b, h, d) = (1, 8, 32);
        let mut rng = Rng::new(2);
        let mut input = || Tensor::randn(&[b, h, t, d], 1.0, DType::F32, &mut rng);
        let (q, k, v) = (input(), input(), input());
        let (fused, composed) = (peak_bytes(&q, &k, &v, true), peak_bytes(&q, &k, &v, false));
        println!(
            "attention/T{t}: peak {:.1} MB fused, {:.1} MB composed (one T x T f32 score matrix per head: {:.1} MB in all)",
            fused as f64 / 1e6,
            composed as f64 / 1e6,
            (b * h * t * t * 4) as f64 / 1e6
        );
        let mut group = c.benchmark_group(format!("attention_fwd_bwd/T{t}"));
        group.sample_size(10);
        group.bench_function("fused", |bench| bench.iter(|| run(&q, &k, &v, true)));
        group.bench_function("composed", |bench| bench.iter(|| run(&q, &k, &v, false)));
        group.finish();
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
