//! What backward keeps: the save policy, saved-tensor handles, the ledger that counts their bytes, and the
//! recipes that rebuild a recomputed output when backward asks for it.
//!
//! An op that keeps a tensor for its backward asks the tape for a `Saved` handle. A tensor an op produced under
//! a policy that recomputes it carries a `Recipe` (the op's inputs, themselves saved, and a function that reruns
//! the op); saving such a tensor keeps only the recipe. The first backward closure that needs it reruns the op
//! once and caches the result; the cache goes when the last handle does.
//!
//! The ledger counts each distinct storage buffer a handle keeps, once, from the moment it is saved until its
//! last handle drops (leaves, the watched parameters, are not counted: they live anyway).

use crate::error::{Error, Result};
use crate::shape::Layout;
use crate::tape::no_grad;
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Which op outputs are kept for backward and which are recomputed from the op's inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SavePolicy {
    /// Keep everything backward needs.
    #[default]
    All,
    /// Keep what is expensive to recompute (outputs of matmuls, attention, embeddings and losses); recompute
    /// norms, activations, RoPE, softmax and elementwise results when backward needs them.
    Selective,
    /// Recompute every recomputable op's output, matmuls included (the inputs of a chain are still kept).
    Recompute,
}

thread_local! {
    static POLICY: Cell<SavePolicy> = const { Cell::new(SavePolicy::All) };
}

/// Runs `f` with `policy` for the ops it records on this thread (scopes nest; the innermost wins).
pub fn with_save_policy<R>(policy: SavePolicy, f: impl FnOnce() -> R) -> R {
    super::scoped(&POLICY, policy, f)
}

/// The save policy in effect on this thread.
pub fn save_policy() -> SavePolicy {
    POLICY.with(|p| p.get())
}

/// What rerunning an op costs, declared by the op where it records (`record_recomputable`):
/// `SavePolicy::Selective` recomputes the cheap ones and keeps the outputs of the costly ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// Linear in its inputs (norms, activations, RoPE, softmax, elementwise).
    Cheap,
    /// A matrix product's worth of work.
    Costly,
}

/// Whether an op whose rerun costs `rerun` should leave its output to be recomputed under the current policy.
pub(crate) fn recomputes(rerun: Rerun) -> bool {
    match save_policy() {
        SavePolicy::All => false,
        SavePolicy::Selective => rerun == Rerun::Cheap,
        SavePolicy::Recompute => true,
    }
}

/// Bytes a tape holds for backward: now, and the most it held at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedBytes {
    pub now: usize,
    pub peak: usize,
}

/// Counts the storage buffers saved on one tape.
#[derive(Default)]
pub(crate) struct Ledger {
    inner: Mutex<LedgerInner>,
}

#[derive(Default)]
struct LedgerInner {
    /// Storage address → (bytes, handles).
    held: HashMap<usize, (usize, usize)>,
    leaves: HashSet<usize>,
    bytes: SavedBytes,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_leaf(&self, t: &Tensor) {
        self.lock().leaves.insert(storage_key(t));
    }

    pub(crate) fn clear_leaves(&self) {
        self.lock().leaves.clear();
    }

    pub(crate) fn bytes(&self) -> SavedBytes {
        self.lock().bytes
    }

    /// Counts one more handle on `t`'s storage; false (nothing counted) for a leaf.
    fn hold(&self, t: &Tensor) -> bool {
        let key = storage_key(t);
        let mut inner = self.lock();
        if inner.leaves.contains(&key) {
            return false;
        }
        let entry = inner.held.entry(key).or_insert((t.storage.byte_len(), 0));
        entry.1 += 1;
        if entry.1 == 1 {
            let add = entry.0;
            inner.bytes.now += add;
            inner.bytes.peak = inner.bytes.peak.max(inner.bytes.now);
        }
        true
    }

    fn release(&self, key: usize) {
        let mut inner = self.lock();
        if let Some(entry) = inner.held.get_mut(&key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                let bytes = entry.0;
                inner.held.remove(&key);
                inner.bytes.now -= bytes;
            }
        }
    }
}

fn storage_key(t: &Tensor) -> usize {
    Arc::as_ptr(&t.storage) as usize
}

/// A counted hold on one storage buffer; releases it when dropped.
pub(crate) struct Hold {
    ledger: Arc<Ledger>,
    key: usize,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.ledger.release(self.key);
    }
}

/// A tensor kept for backward: its data, or the recipe to rebuild it.
pub(crate) enum Saved {
    Kept { tensor: Tensor, _hold: Option<Hold> },
    Lazy { recipe: Arc<Recipe>, layout: Layout },
}

impl Saved {
    /// Keeps `t` (or only its recipe), counted on `ledger`.
    pub(crate) fn new(t: &Tensor, ledger: &Arc<Ledger>) -> Saved {
        if let Some(recipe) = &t.recipe {
            return Saved::Lazy {
                recipe: recipe.clone(),
                layout: t.layout.clone(),
            };
        }
        let hold = ledger.hold(t).then(|| Hold {
            ledger: ledger.clone(),
            key: storage_key(t),
        });
        Saved::Kept {
            tensor: t.detach(),
            _hold: hold,
        }
    }

    /// The saved tensor, recomputed (once per recipe) if it was not kept.
    pub(crate) fn get(&self) -> Result<Tensor> {
        match self {
            Saved::Kept { tensor, .. } => Ok(tensor.clone()),
            Saved::Lazy { recipe, layout } => {
                let full = recipe.materialize()?;
                Ok(full.with_layout(layout.clone()))
            }
        }
    }
}

type Forward = Box<dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync>;

/// How to rebuild an op's output: its saved inputs and the op itself.
pub(crate) struct Recipe {
    op: &'static str,
    inputs: Vec<Saved>,
    forward: Forward,
    numel: usize,
    cache: Mutex<Option<Tensor>>,
}

impl Recipe {
    pub(crate) fn new(
        op: &'static str,
        inputs: Vec<Saved>,
        forward: Forward,
        numel: usize,
    ) -> Recipe {
        Recipe {
            op,
            inputs,
            forward,
            numel,
            cache: Mutex::new(None),
        }
    }

    fn materialize(&self) -> Result<Tensor> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.as_ref() {
            return Ok(t.clone());
        }
        let inputs = self
            .inputs
            .iter()
            .map(Saved::get)
            .collect::<Result<Vec<_>>>()?;
        let out = no_grad(|| (self.forward)(&inputs))?.detach();
        if out.storage.len() != self.numel || !out.is_contiguous() {
            return Err(Error::Tape {
                op: self.op,
                msg: format!(
                    "recomputing gave {:?} over {} elements, the forward pass {} contiguous elements",
                    out.shape(),
                    out.storage.len(),
                    self.numel
                ),
            });
        }
        *cache = Some(out.clone());
        Ok(out)
    }
}
