//! Checkpoint regions: a closure whose forward keeps nothing but its inputs, and whose backward replays it.
//!
//! Forward runs the closure without recording; every tracked tensor an op inside it reads from outside (the
//! region's inputs: activations and parameters) is collected, and one `checkpoint` node over those inputs is
//! recorded. Backward watches the inputs on a fresh tape, replays the closure with each outer tensor standing
//! for its fresh leaf (a substitution every op applies when it records), backpropagates the incoming gradient
//! through the replay, and drops it. Regions nest: a replay may record inner regions, whose own replays see
//! the substitutions of every enclosing one.

use super::saved::{save_policy, with_save_policy, Saved};
use super::{enable_grad, grad_enabled, record, recording_tape, Tape, Track};
use crate::error::Result;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;

/// A tracked tensor's identity: its tape and node.
type Key = (usize, usize);

thread_local! {
    /// Frames of regions being run forward: the inputs collected so far.
    static CAPTURE: RefCell<Vec<Vec<(Key, Tensor)>>> = const { RefCell::new(Vec::new()) };
    /// Substitutions of the replays under way: outer node → leaf of the replay's tape.
    static SUBST: RefCell<Vec<HashMap<Key, Track>>> = const { RefCell::new(Vec::new()) };
}

fn key(track: &Track) -> Key {
    (track.tape_address(), track.id)
}

/// Where `t` is recorded, after the substitutions of the replays under way.
pub(crate) fn effective_track(t: &Tensor) -> Option<Track> {
    let track = t.track.as_ref()?;
    SUBST.with(|s| {
        let maps = s.borrow();
        let mut current = track.clone();
        if maps.is_empty() {
            return Some(current);
        }
        // Each substitution maps onto a newer tape, so the chain ends.
        while let Some(next) = maps.iter().rev().find_map(|m| m.get(&key(&current))) {
            current = next.clone();
        }
        Some(current)
    })
}

/// Whether a region's forward is running on this thread (ops record nothing then).
pub(crate) fn capturing() -> bool {
    CAPTURE.with(|c| !c.borrow().is_empty())
}

/// Adds the tracked ones among `inputs` to the innermost region's inputs.
pub(crate) fn capture(inputs: &[&Tensor]) {
    CAPTURE.with(|c| {
        let mut frames = c.borrow_mut();
        let Some(frame) = frames.last_mut() else {
            return;
        };
        for t in inputs {
            if let Some(track) = effective_track(t) {
                let k = key(&track);
                if !frame.iter().any(|(seen, _)| *seen == k) {
                    frame.push((k, (*t).clone()));
                }
            }
        }
    });
}

/// Pops a thread-local stack when dropped (also when the closure in between panics).
struct PopOnDrop<T: 'static>(&'static std::thread::LocalKey<RefCell<Vec<T>>>);

impl<T> Drop for PopOnDrop<T> {
    fn drop(&mut self) {
        self.0.with(|c| c.borrow_mut().pop());
    }
}

/// Runs `f` as a checkpoint region: its intermediate results are not kept for backward, which replays `f`
/// to rebuild them. `f` must compute the same thing each time it runs (it runs twice when gradients flow).
///
/// Outside recording (no tracked input, or inside `no_grad`) this is just `f()`.
pub fn checkpoint<F>(f: F) -> Result<Tensor>
where
    F: Fn() -> Result<Tensor> + Send + 'static,
{
    if !grad_enabled() || capturing() {
        return f();
    }
    CAPTURE.with(|c| c.borrow_mut().push(Vec::new()));
    let (out, captured) = {
        let _pop = PopOnDrop(&CAPTURE);
        let out = f();
        let frame = CAPTURE.with(|c| c.borrow_mut().last_mut().map(std::mem::take));
        (out, frame.unwrap_or_default())
    };
    let out = out?;
    let refs: Vec<&Tensor> = captured.iter().map(|(_, t)| t).collect();
    let Some(tape) = recording_tape(&refs) else {
        return Ok(out);
    };
    let keys: Vec<Key> = captured.iter().map(|(k, _)| *k).collect();
    let saved: Vec<Saved> = refs.iter().map(|t| tape.save(t)).collect();
    let policy = save_policy();
    record("checkpoint", &refs, out, move |grad, needs| {
        let inputs = saved.iter().map(Saved::get).collect::<Result<Vec<_>>>()?;
        let replay = Tape::new();
        let leaves: Vec<Tensor> = inputs.iter().map(|t| replay.watch(t)).collect();
        let map = keys
            .iter()
            .zip(&leaves)
            .map(|(k, l)| (*k, l.track.clone().expect("a watched tensor is tracked")))
            .collect();
        SUBST.with(|s| s.borrow_mut().push(map));
        let _pop = PopOnDrop(&SUBST);
        let out = enable_grad(|| with_save_policy(policy, &f))?;
        let mut grads = replay.backward_with_seed(&out, grad.clone())?;
        Ok(leaves
            .iter()
            .zip(needs)
            .map(|(leaf, &need)| if need { grads.remove(leaf) } else { None })
            .collect())
    })
}
