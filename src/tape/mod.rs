//! The tape: reverse-mode autodiff on a Wengert list.
//!
//! `Tape::watch` marks a tensor (a parameter) as a leaf; every op whose inputs include a tracked tensor appends
//! one node holding its backward closure and what that closure saved. `Tape::backward` walks the nodes once,
//! from the output down, and returns the gradient of every leaf.
//!
//! Guarantees:
//! - the first gradient reaching a node is moved in; later ones (fan-in) are added;
//! - each node's closure (and so everything it saved) is dropped as soon as it has run, and each intermediate
//!   gradient as soon as it has been passed on;
//! - inside `no_grad` nothing is recorded and no closure is built;
//! - saved tensors are detached, and a tensor's `Track` refers to its tape weakly, so the tape never keeps
//!   itself alive: dropping the last `Tape` handle frees every node and what it saved, with or without a
//!   backward (a checkpoint region's closure holds tracked tensors; a strong handle there would be a cycle);
//! - a second backward over a consumed tape, or mixing tensors of two tapes, is an `Error::Tape`.

mod region;
mod saved;

pub use region::checkpoint;
pub use saved::{save_policy, with_save_policy, SavePolicy, SavedBytes};
pub(crate) use saved::{Rerun, Saved};

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use saved::Ledger;
pub(crate) use saved::Recipe;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// A backward closure: given the gradient of the op's output and which inputs need a gradient, returns one
/// gradient per input (`None` where not needed), each of its input's shape.
pub(crate) type BackwardFn =
    Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

struct Node {
    op: &'static str,
    inputs: Vec<Option<usize>>,
    backward: Option<BackwardFn>,
}

#[derive(Default)]
struct Inner {
    nodes: Vec<Node>,
    consumed: bool,
    ledger: Arc<Ledger>,
}

/// A recording of the ops applied to watched tensors. Cloning gives another handle to the same tape.
#[derive(Clone, Default)]
pub struct Tape {
    inner: Arc<Mutex<Inner>>,
}

/// Where a tracked tensor sits on its tape.
#[derive(Clone)]
pub struct Track {
    /// Weak: only `Tape` handles keep a tape alive. Once the last one is dropped, the tensor is untracked in
    /// effect (ops on it record nothing).
    tape: Weak<Mutex<Inner>>,
    pub(crate) id: usize,
}

impl Track {
    /// Whether this tensor is recorded on `tape`.
    fn is_on(&self, tape: &Tape) -> bool {
        std::ptr::eq(self.tape.as_ptr(), Arc::as_ptr(&tape.inner))
    }

    /// The tape, while a handle to it exists.
    fn tape(&self) -> Option<Tape> {
        self.tape.upgrade().map(|inner| Tape { inner })
    }

    /// An address naming the tape (for keys; stays unique while the track exists).
    pub(crate) fn tape_address(&self) -> usize {
        self.tape.as_ptr() as usize
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with recording switched off on this thread: ops on tracked tensors give untracked results.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad(false, f)
}

/// Runs `f` with recording on or off.
fn with_grad<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    scoped(&GRAD_ENABLED, enabled, f)
}

/// Runs `f` with the thread-local `key` set to `value`, restoring the previous value afterwards (also when `f`
/// panics).
pub(crate) fn scoped<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|c| c.replace(value)));
    f()
}

/// Whether ops on this thread are being recorded.
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with recording switched on (a checkpoint replay inside backward).
fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad(true, f)
}

/// Gradients returned by `Tape::backward`, keyed by the watched tensors.
pub struct Gradients {
    grads: HashMap<usize, Tensor>,
    tape: Tape,
}

impl Gradients {
    /// The gradient of a watched tensor, if the output depended on it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        let track = t.track.as_ref()?;
        if !track.is_on(&self.tape) {
            return None;
        }
        self.grads.get(&track.id)
    }

    /// Moves the gradient of a watched tensor out.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        let track = t.track.as_ref()?;
        if !track.is_on(&self.tape) {
            return None;
        }
        self.grads.remove(&track.id)
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Tape {
        Tape::default()
    }

    /// Number of nodes recorded (leaves included).
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of activations this tape holds for backward (each saved buffer counted once; watched leaves
    /// not counted): now, and the most at once. Everything is released as backward consumes the tape.
    pub fn saved_bytes(&self) -> SavedBytes {
        self.lock().ledger.bytes()
    }

    /// Keeps `t` for a backward closure, counted on this tape's ledger.
    pub(crate) fn save(&self, t: &Tensor) -> Saved {
        let ledger = self.lock().ledger.clone();
        Saved::new(t, &ledger)
    }

    /// Returns `t` as a leaf of this tape (sharing its storage): gradients will be computed for it.
    pub fn watch(&self, t: &Tensor) -> Tensor {
        let mut out = t.detach();
        out.recipe = None;
        let mut inner = self.lock();
        inner.ledger.add_leaf(&out);
        let id = inner.nodes.len();
        inner.nodes.push(Node {
            op: "leaf",
            inputs: Vec::new(),
            backward: None,
        });
        out.track = Some(Track {
            tape: Arc::downgrade(&self.inner),
            id,
        });
        out
    }

    /// Gradients of a scalar (one-element) `loss` with respect to every watched tensor it depends on.
    pub fn backward(&self, loss: &Tensor) -> Result<Gradients> {
        self.backward_streaming(loss, &[], &mut |_, _| Ok(()))
    }

    /// Gradients of `Σ output · seed` (the vector-Jacobian product with `seed`, of `output`'s shape and dtype).
    pub fn backward_with_seed(&self, output: &Tensor, seed: Tensor) -> Result<Gradients> {
        self.run_backward(output, seed, &[], &mut |_, _| Ok(()))
    }

    /// Backward of a scalar `loss` that calls `ready(i, gradient)` as soon as the gradient of `watched[i]` is
    /// final — when the last node that read it has run — while the rest of backward goes on (data-parallel
    /// training starts reducing a bucket of gradients there). Watched tensors the loss does not depend on are
    /// never reported. An error from `ready` stops backward and is returned.
    pub fn backward_streaming(
        &self,
        loss: &Tensor,
        watched: &[Tensor],
        ready: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Gradients> {
        if loss.numel() != 1 {
            return Err(Error::Tape {
                op: "backward",
                msg: format!(
                    "output of shape {:?} is not a scalar; use backward_with_seed",
                    loss.shape()
                ),
            });
        }
        let seed = Tensor::full_on(loss.shape(), 1.0, loss.dtype(), loss.device())?;
        self.run_backward(loss, seed, watched, ready)
    }

    fn run_backward(
        &self,
        output: &Tensor,
        seed: Tensor,
        watched: &[Tensor],
        ready: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Gradients> {
        if seed.shape() != output.shape() {
            return Err(Error::Tape {
                op: "backward",
                msg: format!(
                    "seed of shape {:?} does not match output of shape {:?}",
                    seed.shape(),
                    output.shape()
                ),
            });
        }
        if seed.dtype() != output.dtype() {
            return Err(Error::DType {
                op: "backward",
                msg: format!(
                    "seed is {} but the output is {}",
                    seed.dtype(),
                    output.dtype()
                ),
            });
        }
        let track = match &output.track {
            Some(t) if t.is_on(self) => t.id,
            _ => {
                return Err(Error::Tape {
                    op: "backward",
                    msg: "output was not recorded on this tape (no watched tensor reaches it)"
                        .into(),
                })
            }
        };
        let mut nodes = {
            let mut inner = self.lock();
            if inner.consumed {
                return Err(Error::Tape {
                    op: "backward",
                    msg: "this tape was already consumed by an earlier backward".into(),
                });
            }
            inner.consumed = true;
            inner.ledger.clear_leaves();
            std::mem::take(&mut inner.nodes)
        };
        let mut grads: Vec<Option<Tensor>> = vec![None; nodes.len()];
        grads[track] = Some(seed);
        let mut leaves = HashMap::new();
        // For reporting finished gradients: the watched index of each node, and how many nodes up to the
        // output still read it (a gradient is final once the last of them has run).
        let mut watched_index: HashMap<usize, usize> = HashMap::new();
        let mut readers = vec![0usize; if watched.is_empty() { 0 } else { track + 1 }];
        if !watched.is_empty() {
            for (i, w) in watched.iter().enumerate() {
                if let Some(t) = w.track.as_ref().filter(|t| t.is_on(self)) {
                    watched_index.insert(t.id, i);
                }
            }
            for node in &nodes[..=track] {
                for &input in node.inputs.iter().flatten() {
                    readers[input] += 1;
                }
            }
        }
        no_grad(|| -> Result<()> {
            for id in (0..=track).rev() {
                let node = &mut nodes[id];
                let grad = grads[id].take();
                let backward = node.backward.take();
                match (grad, backward) {
                    (None, _) => {}
                    (Some(grad), None) => {
                        leaves.insert(id, grad);
                    }
                    (Some(grad), Some(backward)) => {
                        let needs: Vec<bool> = node.inputs.iter().map(|i| i.is_some()).collect();
                        let input_grads = backward(&grad, &needs)?;
                        drop(grad);
                        debug_assert_eq!(input_grads.len(), node.inputs.len(), "{}", node.op);
                        for (input, g) in node.inputs.iter().zip(input_grads) {
                            if let (Some(i), Some(g)) = (input, g) {
                                grads[*i] = Some(match grads[*i].take() {
                                    None => g,
                                    Some(prev) => prev.add(&g)?,
                                });
                            }
                        }
                    }
                }
                if readers.is_empty() {
                    continue;
                }
                for &input in node.inputs.iter().flatten() {
                    readers[input] -= 1;
                    if readers[input] == 0 {
                        if let (Some(&i), Some(g)) = (watched_index.get(&input), &grads[input]) {
                            ready(i, g)?;
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(Gradients {
            grads: leaves,
            tape: self.clone(),
        })
    }
}

/// Records `output` of op `op` computed from `inputs`, with its backward. When no input is tracked (or inside
/// `no_grad`) the output is returned untracked and the closure dropped; inside a checkpoint region's forward
/// the tracked inputs are collected as the region's inputs instead.
pub(crate) fn record(
    op: &'static str,
    inputs: &[&Tensor],
    mut output: Tensor,
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Result<Tensor> {
    if !grad_enabled() {
        return Ok(output);
    }
    if region::capturing() {
        region::capture(inputs);
        return Ok(output);
    }
    // Inputs whose tape is gone count as untracked.
    let tracks: Vec<Option<(Track, Tape)>> = inputs
        .iter()
        .map(|t| region::effective_track(t).and_then(|tr| tr.tape().map(|tape| (tr, tape))))
        .collect();
    let mut tape: Option<&Tape> = None;
    for (_, t) in tracks.iter().flatten() {
        match tape {
            None => tape = Some(t),
            Some(first) if !Arc::ptr_eq(&first.inner, &t.inner) => {
                return Err(Error::Tape {
                    op,
                    msg: "inputs are recorded on two different tapes".into(),
                })
            }
            Some(_) => {}
        }
    }
    let Some(tape) = tape else {
        return Ok(output);
    };
    let mut inner = tape.lock();
    if inner.consumed {
        return Err(Error::Tape {
            op,
            msg: "the tape of an input was already consumed by backward".into(),
        });
    }
    let id = inner.nodes.len();
    inner.nodes.push(Node {
        op,
        inputs: tracks
            .iter()
            .map(|t| t.as_ref().map(|(t, _)| t.id))
            .collect(),
        backward: Some(Box::new(backward)),
    });
    drop(inner);
    output.track = Some(Track {
        tape: Arc::downgrade(&tape.inner),
        id,
    });
    Ok(output)
}

/// Like `record`, for an op that can be rerun from its inputs by `forward`: under a save policy that
/// recomputes this op, the output carries a recipe, so ops that save it keep the recipe instead of the data.
pub(crate) fn record_recomputable(
    op: &'static str,
    rerun: Rerun,
    inputs: &[&Tensor],
    output: Tensor,
    forward: impl Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Result<Tensor> {
    let tape = recording_tape(inputs).filter(|_| saved::recomputes(rerun));
    let numel = output.storage.len();
    let contiguous = output.is_contiguous() && output.layout.offset == 0;
    let mut out = record(op, inputs, output, backward)?;
    if let (Some(tape), true) = (tape, contiguous) {
        let saved = inputs.iter().map(|t| tape.save(t)).collect();
        out.recipe = Some(Arc::new(Recipe::new(op, saved, Box::new(forward), numel)));
    }
    Ok(out)
}

/// The tape an op over `inputs` records on, if any (none inside `no_grad` or a region's forward).
pub(crate) fn recording_tape(inputs: &[&Tensor]) -> Option<Tape> {
    if !grad_enabled() || region::capturing() {
        return None;
    }
    inputs
        .iter()
        .find_map(|t| region::effective_track(t).and_then(|t| t.tape()))
}
