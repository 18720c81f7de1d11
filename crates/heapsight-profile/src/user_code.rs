//! The user's frame: which frames of a stack are the service's own code, and which are
//! plumbing around it: the standard library, the async runtime, the frameworks it builds on.
//!
//! Plumbing sits at both ends of a stack. At the leaf, the allocation went through containers
//! (`Vec` growth, `Box::new`, `HashMap` resizing: `alloc::`, `hashbrown::`) before it reached the
//! allocator. At the root, the thread was started (`std::sys::thread::...::thread_start`,
//! `catch_unwind`), and a tokio worker polled the task (`tokio::runtime::scheduler`, the task
//! harness). A person asking "who holds this memory?" means neither: they mean the first frame,
//! counting from the leaf, that is their code ([`UserCode::site`]). And a flame graph should
//! start where their code starts, with the root-side run folded into one labelled frame
//! ([`UserCode::root_run`]).
//!
//! A frame is plumbing when the crate it belongs to is a library: one of
//! [`DEFAULT_LIBRARIES`] or a crate the user names (`hyper`, `tower`, ...), or a C runtime entry
//! point (`_start`, `main`, `start_thread`). A trait method belongs to its type's crate and to
//! its trait's (a primitive or generic type has none): it is the user's when either is, since
//! the user wrote the impl or the type it was derived for.
//!
//! | frame | crate | the user's? |
//! |---|---|---|
//! | `myapp::cache::insert` | `myapp` | yes |
//! | `<myapp::Config as core::clone::Clone>::clone` | `myapp`, `core` | yes |
//! | `<alloc::vec::Vec<T> as myapp::Ext>::extend_all` | `alloc`, `myapp` | yes |
//! | `<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem` | `alloc` | no |
//! | `<&dyn core::ops::function::Fn<()> as core::ops::function::FnOnce<()>>::call_once` | `core` | no |
//! | `tokio::runtime::task::harness::Harness<T,S>::poll` | `tokio` | no |
//!
//! ```
//! use heapsight_profile::UserCode;
//! let code = UserCode::default().with_libraries(["hyper"]);
//! // Leaf first, as profiles list frames.
//! let stack = [
//!     "alloc::raw_vec::RawVec<T>::grow_one",
//!     "hyper::proto::h1::io::Buffered<T,B>::parse",
//!     "myapp::handler::upload::{{closure}}",
//!     "tokio::runtime::task::harness::poll_future",
//!     "std::sys::thread::unix::Thread::new::thread_start",
//! ];
//! assert_eq!(code.site(&stack), Some(2));
//! ```

/// Crates whose frames are never the user's: the standard library, the async runtime and the
/// containers and primitives they are built from, and heapsight itself.
pub const DEFAULT_LIBRARIES: [&str; 19] = [
    "std",
    "core",
    "alloc",
    "hashbrown",
    "tokio",
    "tokio_util",
    "futures",
    "futures_util",
    "futures_core",
    "futures_executor",
    "mio",
    "parking_lot",
    "parking_lot_core",
    "crossbeam_channel",
    "crossbeam_deque",
    "crossbeam_epoch",
    "crossbeam_utils",
    "rayon_core",
    "heapsight",
];

/// C runtime and unwinding entry points that start threads and programs: root-side plumbing
/// whose names carry no crate. Matched without glibc's `__GI_` alias prefix and `@GLIBC_...`
/// version suffix, as symbol tables and DWARF name them (`__GI___clone3`,
/// `__libc_start_main@GLIBC_2.34`).
const ENTRY_POINTS: [&str; 10] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "main",
    "start_thread",
    "clone",
    "__clone",
    "clone3",
    "__clone3",
    "__rust_try",
];

fn is_entry_point(function: &str) -> bool {
    let name = function.split('@').next().unwrap_or(function);
    let name = name.strip_prefix("__GI_").unwrap_or(name);
    ENTRY_POINTS.contains(&name)
}

/// The rule of which crates are the user's. The default counts every crate as the user's but
/// [`DEFAULT_LIBRARIES`].
#[derive(Clone, Debug)]
pub struct UserCode {
    libraries: Vec<String>,
}

impl Default for UserCode {
    fn default() -> Self {
        UserCode {
            libraries: DEFAULT_LIBRARIES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl UserCode {
    /// The same rule, with the crates `names` counted as libraries too (`"hyper"`, `"tower"`;
    /// a trailing `::` is allowed, and crate names are written with `_`, as in paths).
    pub fn with_libraries<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        for n in names {
            let n = n.as_ref().trim().trim_end_matches("::").replace('-', "_");
            if !n.is_empty() && !self.libraries.contains(&n) {
                self.libraries.push(n);
            }
        }
        self
    }

    /// Whether `function` (a demangled name) is the user's code.
    pub fn is_users(&self, function: &str) -> bool {
        let crates = crates_of(function);
        if crates.is_empty() {
            return !is_entry_point(function);
        }
        crates
            .iter()
            .any(|krate| !self.libraries.iter().any(|l| l == krate))
    }

    /// The index of the first of the user's frames in `leaf_first` (a stack's function names,
    /// leaf first): the site that allocated, in the user's terms. `None` when no frame is.
    pub fn site(&self, leaf_first: &[&str]) -> Option<usize> {
        leaf_first.iter().position(|f| self.is_users(f))
    }

    /// The run of plumbing at the root of `root_first` (a stack's function names, root first):
    /// how many frames it has, and a label for them, such as `"tokio worker"`. The run never
    /// takes a stack's last frame, so a stack that is plumbing throughout keeps its leaf.
    ///
    /// ```
    /// use heapsight_profile::UserCode;
    /// let root_first = [
    ///     "std::sys::thread::unix::Thread::new::thread_start",
    ///     "std::panicking::catch_unwind",
    ///     "tokio::runtime::scheduler::multi_thread::worker::run",
    ///     "tokio::runtime::task::harness::Harness<T,S>::poll",
    ///     "myapp::serve::{{closure}}",
    ///     "alloc::vec::Vec<T>::push",
    /// ];
    /// assert_eq!(UserCode::default().root_run(&root_first), (4, "tokio worker"));
    /// ```
    pub fn root_run(&self, root_first: &[&str]) -> (usize, &'static str) {
        let limit = root_first.len().saturating_sub(1);
        let n = root_first[..limit]
            .iter()
            .take_while(|f| !self.is_users(f))
            .count();
        let run = &root_first[..n];
        let has = |prefix: &str| run.iter().any(|f| f.contains(prefix));
        // tokio starts its workers on its blocking pool: a worker's run has both.
        let label = if has("tokio::runtime::scheduler") {
            "tokio worker"
        } else if has("tokio::runtime::blocking") {
            "tokio blocking pool"
        } else if has("tokio::") {
            "tokio worker"
        } else if has("std::rt::lang_start") || run.first() == Some(&"main") {
            "program start"
        } else {
            "thread start"
        };
        (n, label)
    }
}

/// The crates a demangled function name belongs to: one for a path, the type's and the trait's
/// for a trait method; none for names without a path (C symbols) or with a primitive type.
fn crates_of(function: &str) -> Vec<&str> {
    let Some(inner) = function.strip_prefix('<') else {
        return first_segment(function).into_iter().collect();
    };
    // `<Type as Trait>::method` or `<Type>::method`: find where the type ends at depth 0.
    let mut depth = 0usize;
    let mut type_end = inner.len();
    let mut trait_range = None;
    let mut previous = ' ';
    for (i, c) in inner.char_indices() {
        // The `>` of a function type's `->` closes nothing.
        let arrow = c == '>' && previous == '-';
        previous = c;
        match c {
            _ if arrow => {}
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' if depth == 0 => {
                match trait_range {
                    Some((start, _)) => trait_range = Some((start, i)),
                    None => type_end = i,
                }
                break;
            }
            '>' | ')' | ']' => depth -= 1,
            ' ' if depth == 0 && trait_range.is_none() && inner[i..].starts_with(" as ") => {
                type_end = i;
                trait_range = Some((i + 4, inner.len()));
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(2);
    let self_type = strip_type_decorations(&inner[..type_end]);
    if let Some(krate) = first_segment(self_type) {
        out.push(krate);
    }
    if let Some((start, end)) = trait_range {
        out.extend(first_segment(strip_type_decorations(&inner[start..end])));
    }
    out
}

fn strip_type_decorations(mut t: &str) -> &str {
    loop {
        let before = t;
        for p in ["&mut ", "&", "*const ", "*mut ", "dyn ", "impl ", "[", "("] {
            t = t.strip_prefix(p).unwrap_or(t);
        }
        if t == before {
            return t;
        }
    }
}

/// The crate a path starts with: the identifier before its first `::`. A type that is no path
/// (`fn() -> T`, `(A, B)`, `u8`) has none.
fn first_segment(path: &str) -> Option<&str> {
    let (first, _) = path.split_once("::")?;
    let first = first.split('<').next().unwrap_or(first);
    let identifier = !first.is_empty()
        && first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !first.starts_with(|c: char| c.is_ascii_digit());
    identifier.then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_the_users_unless_its_crate_is_a_library() {
        let code = UserCode::default();
        for users in [
            "myapp::cache::insert",
            "<myapp::Config as core::clone::Clone>::clone",
            "<alloc::vec::Vec<T> as myapp::Ext>::extend_all",
            "myapp::serve::{{closure}}",
            "<myapp::Handler<S> as tower_service::Service<R>>::call",
            "axum::routing::Router<S>::call",
            "sqlite3_exec",
        ] {
            assert!(code.is_users(users), "{users}");
        }
        for plumbing in [
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<&dyn core::ops::function::Fn<(), Output = i32> + core::marker::Sync as core::ops::function::FnOnce<()>>::call_once",
            "alloc::raw_vec::RawVecInner<A>::reserve::do_reserve_and_handle",
            "<hashbrown::map::HashMap<K,V,S,A> as core::iter::traits::collect::Extend<(K,V)>>::extend",
            "std::panic::catch_unwind::<std::rt::lang_start_internal::{closure#0}, isize>",
            "tokio::runtime::task::harness::Harness<T,S>::poll",
            "<std::sys::thread::unix::Thread>::new::thread_start",
            "<T as alloc::borrow::ToOwned>::to_owned",
            "<[T] as alloc::slice::hack::ConvertVec>::to_vec",
            "core::ops::function::FnOnce::call_once{{vtable.shim}}",
            "<fn() -> core::result::Result<(), alloc::string::String> as core::ops::function::FnOnce<()>>::call_once",
            "main",
            "__rust_try",
        ] {
            assert!(!code.is_users(plumbing), "{plumbing}");
        }
    }

    #[test]
    fn frameworks_the_user_names_are_plumbing_too() {
        let code = UserCode::default().with_libraries(["axum::", "tower-http", " "]);
        assert!(!code.is_users("axum::routing::Router<S>::call"));
        assert!(!code.is_users("tower_http::trace::Trace<S>::call"));
        assert!(code.is_users("myapp::main"));
    }

    #[test]
    fn the_site_is_the_first_user_frame_from_the_leaf() {
        let code = UserCode::default();
        let stack = [
            "alloc::boxed::box_new_uninit",
            "alloc::sync::Arc<T>::new",
            "tokio::sync::mpsc::chan::channel",
            "timer_leak_demo::cli::run_broker::{{closure}}",
            "timer_leak_demo::cli::run::{{closure}}",
        ];
        assert_eq!(code.site(&stack), Some(3));
        assert_eq!(
            code.site(&["alloc::alloc::alloc", "std::rt::lang_start"]),
            None
        );
    }

    #[test]
    fn the_root_run_is_labelled_by_what_started_it_and_keeps_the_leaf() {
        let code = UserCode::default();
        let program = [
            "main",
            "std::rt::lang_start_internal",
            "std::rt::lang_start::{{closure}}",
            "core::ops::function::FnOnce::call_once",
            "myapp::main",
        ];
        assert_eq!(code.root_run(&program), (4, "program start"));
        let blocking = [
            "std::sys::thread::unix::Thread::new::thread_start",
            "tokio::runtime::blocking::pool::Inner::run",
            "myapp::load",
        ];
        assert_eq!(code.root_run(&blocking), (2, "tokio blocking pool"));
        let worker_on_the_pool = [
            "std::sys::thread::unix::Thread::new::thread_start",
            "tokio::runtime::blocking::pool::Inner::run",
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "myapp::serve::{{closure}}",
        ];
        assert_eq!(code.root_run(&worker_on_the_pool), (3, "tokio worker"));
        let plain = [
            "start_thread",
            "std::sys::backtrace::__rust_begin_short_backtrace",
            "myapp::worker",
        ];
        assert_eq!(code.root_run(&plain), (2, "thread start"));
        // A DWARF unwinder reaches glibc's own entry points, named as its symbols are.
        let from_clone = [
            "__GI___clone3",
            "start_thread",
            "std::sys::thread::unix::Thread::new::thread_start",
            "myapp::worker",
        ];
        assert_eq!(code.root_run(&from_clone), (3, "thread start"));
        assert!(!code.is_users("__libc_start_main@GLIBC_2.34"));
        assert!(
            code.is_users("__GI_myapp_hook"),
            "only known entry points are plumbing"
        );
        let all_plumbing = ["start_thread", "std::thread::local::LocalKey<T>::with"];
        assert_eq!(code.root_run(&all_plumbing).0, 1, "the leaf stays");
        assert_eq!(code.root_run(&[]).0, 0);
        assert_eq!(code.root_run(&["myapp::main"]).0, 0);
    }
}
