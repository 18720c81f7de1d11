//! A stack store for sources other than the sampler: stacks another profiler recorded (jemalloc's,
//! a test's), interned so that each distinct stack has one [`StackId`] for the store's lifetime.
//!
//! The sampler's own table (`stacks`) must never allocate or lock, so it is fixed-size and
//! mapped apart from the heap. This store runs outside any allocator hook, on whatever thread
//! takes a snapshot, so it is an ordinary map behind a mutex, and it maps none of the sampler's
//! tables: a process on plain jemalloc pays nothing for them.

use crate::snapshot::{StackFrames, StackId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Interned stacks of return addresses (leaf first), with ids from 0 up, bounded in number.
///
/// ```
/// use heapsight::{StackFrames, StackStore};
/// let store = StackStore::new();
/// let a = store.intern(&[0x1010, 0x2020]).unwrap();
/// assert_eq!(store.intern(&[0x1010, 0x2020]), Some(a), "the same stack, the same id");
/// assert_ne!(store.intern(&[0x1010]), Some(a));
/// assert_eq!(store.frames(a), vec![0x1010, 0x2020]);
/// assert_eq!(store.len(), 2);
/// ```
pub struct StackStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ids: HashMap<Arc<[u64]>, u32>,
    stacks: Vec<Arc<[u64]>>,
}

impl StackStore {
    /// As many distinct stacks as the sampler's own table holds.
    pub const DEFAULT_CAPACITY: usize = crate::stacks::MAX_STACKS;

    /// A store of up to [`StackStore::DEFAULT_CAPACITY`] stacks.
    pub fn new() -> StackStore {
        StackStore::with_capacity(StackStore::DEFAULT_CAPACITY)
    }

    /// A store of up to `capacity` distinct stacks.
    pub fn with_capacity(capacity: usize) -> StackStore {
        StackStore {
            capacity: capacity.min(u32::MAX as usize),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of `return_addresses` (leaf first), adding the stack if it is new; `None` when the
    /// store is full.
    pub fn intern(&self, return_addresses: &[u64]) -> Option<StackId> {
        let mut inner = self.lock();
        if let Some(&id) = inner.ids.get(return_addresses) {
            return Some(StackId(id));
        }
        if inner.stacks.len() >= self.capacity {
            return None;
        }
        let id = inner.stacks.len() as u32;
        let stack: Arc<[u64]> = return_addresses.into();
        inner.stacks.push(stack.clone());
        inner.ids.insert(stack, id);
        Some(StackId(id))
    }

    /// Distinct stacks held.
    pub fn len(&self) -> usize {
        self.lock().stacks.len()
    }

    /// Whether no stack was interned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for StackStore {
    fn default() -> Self {
        StackStore::new()
    }
}

impl StackFrames for StackStore {
    fn frames(&self, id: StackId) -> Vec<u64> {
        self.lock()
            .stacks
            .get(id.0 as usize)
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_store_refuses_new_stacks_but_still_finds_old_ones() {
        let store = StackStore::with_capacity(2);
        let a = store.intern(&[1]).unwrap();
        store.intern(&[2]).unwrap();
        assert_eq!(store.intern(&[3]), None);
        assert_eq!(store.intern(&[1]), Some(a));
        assert!(
            store.frames(StackId(7)).is_empty(),
            "an unknown id has no frames"
        );
    }
}
