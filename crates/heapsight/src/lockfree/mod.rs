//! The hook's lock-free structures, each over memory it is lent and the atomics of
//! [`crate::sync`]: the free lists of the sampled-block region, the stack table's index, and the
//! table of large sampled blocks.
//!
//! Their owners (`region`, `stacks`, `live`) map the memory and keep it for the process's life;
//! these files hold only the algorithms, so that `tests/loom.rs` can model-check them on small
//! arrays of loom's atomics. Every file here names nothing of the crate but `crate::sync`.
//!
//! Must never: allocate through the global allocator, block, or wait for another thread.

pub(crate) mod free_list;
pub(crate) mod large_blocks;
pub(crate) mod stack_index;
