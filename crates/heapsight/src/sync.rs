//! The atomics the hook's lock-free structures ([`crate::lockfree`]) are written against.
//!
//! Here they are std's. `tests/loom.rs` compiles the same structure files against a module of
//! this name that gives loom's instead, and drives them through every interleaving loom can
//! reach; the files therefore name their atomics only through `crate::sync`, and take their
//! memory as borrowed slices rather than mapping it themselves.

pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
