//! The plumbing rule: which frames belong to the allocation path (the profiler's own hook, the
//! allocator shims, `alloc::` internals, jemalloc) rather than to the code that allocated.
//!
//! Profiles start each stack at the code that allocated, as Go trims `runtime.*`: trimming
//! ([`plumbing_prefix`]) uses this rule, and every heap profile carries the same rule as its
//! `drop_frames` regular expression ([`PLUMBING_FRAMES`]), so that viewers agree.

use crate::symbolize::Frame;

/// The regular expression (RE2, matched against whole function names) of the profiler's own
/// frames and the allocator plumbing. Written into every heap profile as `drop_frames`.
pub const PLUMBING_FRAMES: &str = concat!(
    "(<?heapsight::(sampler|unwind|dwarf|stacks|region|live|clock|poisson|tables|os)::.*|(__rustc::)?(__rust_alloc|__rust_realloc|__rust_dealloc|__rg_|__rdl_).*|",
    "alloc::alloc::.*|<alloc::alloc::.*|alloc::raw_vec::.*|<alloc::raw_vec::.*|",
    "core::alloc::.*|std::alloc::.*|<std::alloc::.*|<.* as core::alloc::.*|",
    "tikv_jemallocator::.*|_rjem_.*|",
    "malloc|calloc|realloc|mallocx|rallocx|posix_memalign|aligned_alloc)"
);

/// Whether a function is part of the allocation path rather than the code that allocates.
/// The same rule as [`PLUMBING_FRAMES`].
pub fn is_plumbing(function: &str) -> bool {
    // jemalloc's entry points, when it is built without a prefix.
    const ENTRY_POINTS: [&str; 7] = [
        "malloc",
        "calloc",
        "realloc",
        "mallocx",
        "rallocx",
        "posix_memalign",
        "aligned_alloc",
    ];
    // The allocator shims only: other `__rust_*` symbols (`__rust_try`, `__rust_start_panic`)
    // call back into user code.
    const SHIMS: [&str; 5] = [
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rg_",
        "__rdl_",
    ];
    let shim = function.strip_prefix("__rustc::").unwrap_or(function);
    if SHIMS.iter().any(|p| shim.starts_with(p)) {
        return true;
    }
    // The hook's modules on the allocation path; not `heapsight::own` (the profiler's own work,
    // whose allocations are profiled under it) nor the rest of the crate's API.
    let hook = function
        .strip_prefix('<')
        .unwrap_or(function)
        .strip_prefix("heapsight::")
        .is_some_and(|rest| {
            HOOK_MODULES
                .iter()
                .any(|m| rest.strip_prefix(m).is_some_and(|r| r.starts_with("::")))
        });
    const PREFIXES: [&str; 9] = [
        "alloc::alloc::",
        "<alloc::alloc::",
        "alloc::raw_vec::",
        "<alloc::raw_vec::",
        "core::alloc::",
        "std::alloc::",
        "<std::alloc::",
        "tikv_jemallocator::",
        // jemalloc's symbols as tikv-jemalloc-sys builds it, internals included.
        "_rjem_",
    ];
    // Any allocator's trait methods: `<tikv_jemallocator::Jemalloc as core::alloc::...>::alloc`.
    let allocator_impl = function.starts_with('<') && function.contains(" as core::alloc::");
    hook || allocator_impl
        || PREFIXES.iter().any(|p| function.starts_with(p))
        || ENTRY_POINTS.contains(&function)
}

/// The modules of the hook that allocations pass through.
const HOOK_MODULES: [&str; 10] = [
    "sampler", "unwind", "dwarf", "stacks", "region", "live", "clock", "poisson", "tables", "os",
];

/// Whether a location (its frames leaf first, inlined ones before the function they were inlined
/// into) lies inside the allocation path: its outermost function is plumbing, so everything
/// inlined into it is too (jemalloc's `_rjem_malloc` with its inlined internals).
fn inside_plumbing(frames: &[Frame]) -> bool {
    frames.last().is_some_and(|f| is_plumbing(&f.function))
}

/// How far down a stack the allocation path reaches.
const PLUMBING_WINDOW: usize = 32;

/// What to trim from the leaf end of a stack (its locations, leaf first) so that it starts at the
/// code that allocated: `(locations, lines)`, the whole locations to drop, then the inlined
/// plumbing lines to drop from the leaf end of the next one.
///
/// Everything up to the rootmost location inside the plumbing, among the first
/// [`PLUMBING_WINDOW`], goes. Going by the rootmost one, rather than stopping at the first
/// location that is not plumbing, also removes an allocator's internal functions that carry no
/// recognisable name: jemalloc's static `prof_backtrace_impl` and `imalloc` lie between its
/// named entry points. Then the caller's first location may still hold inlined plumbing at its
/// leaf end (`Vec::with_capacity` inlines down to `__rust_alloc`'s call).
pub(crate) fn plumbing_prefix<'a>(locations: impl Iterator<Item = &'a [Frame]>) -> (usize, usize) {
    let window: Vec<&[Frame]> = locations.take(PLUMBING_WINDOW + 1).collect();
    let searched = &window[..window.len().min(PLUMBING_WINDOW)];
    let mut cut = searched
        .iter()
        .rposition(|f| inside_plumbing(f))
        .map_or(0, |i| i + 1);
    let mut lines = 0;
    if let Some(next) = window.get(cut) {
        lines = next.iter().take_while(|f| is_plumbing(&f.function)).count();
        if lines == next.len() && lines > 0 {
            (cut, lines) = (cut + 1, 0);
        }
    }
    (cut, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUMBING: [&str; 14] = [
        "heapsight::sampler::Sampler<A>::alloc_sampled",
        "_rjem_je_prof_backtrace",
        "_rjem_malloc",
        "mallocx",
        "tikv_jemallocator::layout_to_flags",
        "<heapsight::sampler::Sampler<std::alloc::System> as core::alloc::global::GlobalAlloc>::alloc",
        "__rust_alloc",
        "__rustc::__rust_alloc",
        "__rdl_alloc",
        "alloc::alloc::exchange_malloc",
        "<alloc::alloc::Global as core::alloc::Allocator>::allocate",
        "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
        "<std::alloc::System as core::alloc::global::GlobalAlloc>::alloc",
        "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
    ];
    const USER_CODE: [&str; 12] = [
        "main",
        "__rust_try",
        "__rustc::rust_begin_unwind",
        "__rust_start_panic",
        "malloc_like_user_fn",
        "myapp::mallocx_pool::get",
        "myapp::cache::insert",
        "alloc::vec::Vec<T,A>::with_capacity",
        "<myapp::Foo as core::clone::Clone>::clone",
        "heapsight_server::handler",
        "heapsight::own::run::<alloc::vec::Vec<u8>, F>",
        "<heapsight::source::SamplerSource as heapsight::source::SnapshotSource>::unprofiled",
    ];

    /// A location from its function names, leaf (innermost inlined) first.
    fn loc(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame {
                function: (*n).into(),
                system_name: (*n).into(),
                file: None,
                line: 0,
            })
            .collect()
    }

    fn prefix(stack: &[Vec<Frame>]) -> (usize, usize) {
        plumbing_prefix(stack.iter().map(|l| &l[..]))
    }

    #[test]
    fn trimming_starts_stacks_at_the_code_that_allocated() {
        // heapsight's hook, then a caller that inlined `Vec::with_capacity` down to the shim call.
        let sampler = [
            loc(&["heapsight::sampler::Sampler<A>::alloc_sampled"]),
            loc(&["__rust_alloc"]),
            loc(&[
                "alloc::alloc::alloc",
                "alloc::vec::Vec<T>::with_capacity",
                "myapp::load",
            ]),
            loc(&["main"]),
        ];
        assert_eq!(prefix(&sampler), (2, 1));
        // jemalloc's: unnamed static internals between its named entry points.
        let jemalloc = [
            loc(&["prof_backtrace_impl"]),
            loc(&["_rjem_je_prof_backtrace"]),
            loc(&["prof_alloc_prep", "imalloc_body", "imalloc"]),
            loc(&["_rjem_mallocx"]),
            loc(&[
                "alloc::alloc::alloc",
                "alloc::boxed::Box<T>::new",
                "myapp::after",
            ]),
            loc(&["main"]),
        ];
        assert_eq!(prefix(&jemalloc), (4, 1));
        // Nothing recognisable: nothing trimmed. Panic and unwind machinery is not plumbing.
        let plain = [loc(&["myapp::leaf"]), loc(&["__rust_try"]), loc(&["main"])];
        assert_eq!(prefix(&plain), (0, 0));
        // A location of nothing but inlined plumbing goes whole.
        let inlined = [
            loc(&["__rust_alloc", "alloc::alloc::alloc"]),
            loc(&["main"]),
        ];
        assert_eq!(prefix(&inlined), (1, 0));
        // The allocation path is near the leaf: a plumbing-named function further down does not
        // take the user's frames with it.
        let mut deep: Vec<Vec<Frame>> = (0..40).map(|i| loc(&[&format!("myapp::f{i}")])).collect();
        deep.push(loc(&["alloc::raw_vec::finish_grow"]));
        assert_eq!(prefix(&deep), (0, 0));
    }

    #[test]
    fn drop_frames_in_profiles_states_the_same_rule_as_our_trimming() {
        // pprof matches drop_frames against whole function names.
        let re = regex::Regex::new(&format!("^(?:{PLUMBING_FRAMES})$")).unwrap();
        for f in PLUMBING.iter().chain(&USER_CODE) {
            assert_eq!(re.is_match(f), is_plumbing(f), "{f}");
        }
    }

    #[test]
    fn plumbing_is_recognised_and_user_code_is_not() {
        for f in PLUMBING {
            assert!(is_plumbing(f), "{f}");
        }
        for f in USER_CODE {
            assert!(!is_plumbing(f), "{f}");
        }
    }
}
