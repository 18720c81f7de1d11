//! Call trees: a profile's samples merged by stack, root first, as flame graphs and top tables
//! draw them; optionally against a baseline profile, for growth; and capped in size.
//!
//! A node is a function reached by one particular path from the root. Inlined frames count as
//! frames of their own, as pprof shows them. Given a baseline, every node carries both values and
//! whether the baseline had it at all, so a viewer can tell growth, shrinkage and new code apart.
//!
//! ```
//! use heapsight_profile::{heap_profile, CallTree, HeapView};
//!
//! #[global_allocator]
//! static GLOBAL: heapsight::Sampler<std::alloc::System> =
//!     heapsight::Sampler::new(std::alloc::System);
//!
//! #[inline(never)]
//! fn load_index() -> Vec<u64> {
//!     vec![1; 1 << 18] // 2 MiB
//! }
//!
//! heapsight::set_sample_rate(1);
//! let index = load_index();
//! let p = heap_profile(HeapView::InUse);
//! let tree = CallTree::from_profile(&p, "inuse_space", None).capped(16_000);
//! assert_eq!(tree.nodes[0].name, "root");
//! assert_eq!(tree.nodes[0].total, p.total("inuse_space"));
//! let node = tree.nodes.iter().find(|n| n.name.ends_with("load_index")).expect("its node");
//! assert!(node.total >= 2 << 20, "{} bytes under load_index", node.total);
//! # drop(index);
//! ```

use crate::profile::Profile;
use crate::user_code::UserCode;
use std::collections::HashMap;

/// One node of a [`CallTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    /// The function, or `root`, or `other` for a bucket of merged small nodes.
    pub name: String,
    /// The function's source file, when known.
    pub file: String,
    /// The source line of the first stack that reached this node (0 when unknown). A node
    /// stands for a function on one path, which may be several lines of it.
    pub line: i64,
    /// Index of the parent node; the root is its own parent.
    pub parent: u32,
    /// Value of samples whose stack ends here.
    pub self_value: i64,
    /// Value of samples whose stack passes through here.
    pub total: i64,
    /// `total` in the baseline profile (0 without one).
    pub base_total: i64,
    /// Whether the baseline had this node (false without one).
    pub in_base: bool,
    /// Indices of the children, largest `total` first.
    pub children: Vec<u32>,
    /// The label sets whose samples make up most of `total`: up to [`NODE_LABEL_SETS`], each
    /// as `key=value` pairs joined by `, ` with its part of `total`, largest first. Empty when
    /// the profile has no labels.
    pub labels: Vec<(String, i64)>,
}

/// How many label sets a [`TreeNode`] names.
pub const NODE_LABEL_SETS: usize = 3;

/// The name of the frame [`TreeFilter::group_by`] puts at the root of samples without the key.
pub const NO_LABEL: &str = "(none)";

/// A call tree; `nodes[0]` is the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallTree {
    pub nodes: Vec<TreeNode>,
    /// Nodes merged into `other` buckets by [`CallTree::capped`].
    pub merged_nodes: usize,
}

/// Which stacks and frames a tree is built from, as pprof's `-focus` and `-hide` choose them.
#[derive(Clone, Copy, Default)]
pub struct TreeFilter<'a> {
    /// Keep only samples with a frame whose function matches.
    pub focus: Option<&'a dyn Fn(&str) -> bool>,
    /// Leave out frames whose function matches (their samples stay, attributed to the caller).
    pub hide: Option<&'a dyn Fn(&str) -> bool>,
    /// Build the tree of the callers of this function: each stack through it is cut at its
    /// outermost call and read upwards, so the first level is the function and the levels below
    /// are who called it.
    pub callers_of: Option<&'a str>,
    /// Fold the run of plumbing at each stack's root (thread start, the tokio worker, see
    /// [`UserCode::root_run`]) into one frame named for it in brackets, `[tokio worker]`, so
    /// that the user's own frames start near the top. Not applied to a callers view.
    pub fold_root: Option<&'a UserCode>,
    /// Group by this label key: each sample's stack starts with a frame `key=value` (or
    /// `key=(none)`), so the tree's first level is the key's values, as `go tool pprof
    /// -tagroot` builds it.
    pub group_by: Option<&'a str>,
}

impl CallTree {
    /// The tree of `sample_type` (e.g. `"inuse_space"`) in `profile`, with `base`'s values
    /// alongside when given.
    pub fn from_profile(profile: &Profile, sample_type: &str, base: Option<&Profile>) -> CallTree {
        Self::filtered(profile, sample_type, base, TreeFilter::default())
    }

    /// As [`CallTree::from_profile`], with `filter` applied to both profiles.
    pub fn filtered(
        profile: &Profile,
        sample_type: &str,
        base: Option<&Profile>,
        filter: TreeFilter<'_>,
    ) -> CallTree {
        let mut b = TreeBuilder::new(filter);
        b.add(profile, sample_type, false);
        if let Some(base) = base {
            b.add(base, sample_type, true);
        }
        b.finish_labels();
        let mut tree = CallTree {
            nodes: b.nodes,
            merged_nodes: 0,
        };
        tree.sort_children();
        tree
    }

    /// At most `max_nodes` nodes: the largest (by current value, or by change from the
    /// baseline) are kept, and each parent's remaining children become one `other` child.
    pub fn capped(self, max_nodes: usize) -> CallTree {
        if self.nodes.len() <= max_nodes.max(2) {
            return self;
        }
        // Rank by what a viewer would see: size now, or size of the change.
        let weight = |n: &TreeNode| n.total.abs().max((n.total - n.base_total).abs());
        let mut order: Vec<usize> = (1..self.nodes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(weight(&self.nodes[i])));
        // Keep whole paths: a kept node keeps its ancestors. Leave room for `other` buckets.
        let budget = max_nodes * 9 / 10;
        let mut keep = vec![false; self.nodes.len()];
        keep[0] = true;
        let mut kept = 1;
        for &i in &order {
            if kept >= budget {
                break;
            }
            let mut j = i;
            while !keep[j] {
                keep[j] = true;
                kept += 1;
                j = self.nodes[j].parent as usize;
            }
        }
        let mut out = CallTree {
            nodes: Vec::with_capacity(kept + max_nodes / 10),
            merged_nodes: 0,
        };
        let mut new_index = vec![u32::MAX; self.nodes.len()];
        let mut root = self.nodes[0].clone();
        root.children.clear();
        out.nodes.push(root);
        new_index[0] = 0;
        // Parents come before children in `self.nodes`, so one pass in order suffices.
        for i in 0..self.nodes.len() {
            if !keep[i] {
                continue;
            }
            let ni = new_index[i];
            let (mut other_total, mut other_base, mut dropped) = (0, 0, 0);
            for &c in &self.nodes[i].children {
                let c = c as usize;
                if keep[c] {
                    let mut child = self.nodes[c].clone();
                    child.parent = ni;
                    child.children.clear();
                    new_index[c] = out.nodes.len() as u32;
                    out.nodes[ni as usize].children.push(new_index[c]);
                    out.nodes.push(child);
                } else {
                    other_total += self.nodes[c].total;
                    other_base += self.nodes[c].base_total;
                    dropped += count_subtree(&self.nodes, c);
                }
            }
            if dropped > 0 && out.nodes.len() < max_nodes {
                let idx = out.nodes.len() as u32;
                out.nodes.push(TreeNode {
                    name: "other".into(),
                    file: String::new(),
                    line: 0,
                    parent: ni,
                    self_value: other_total,
                    total: other_total,
                    base_total: other_base,
                    in_base: other_base != 0,
                    children: Vec::new(),
                    labels: Vec::new(),
                });
                out.nodes[ni as usize].children.push(idx);
                out.merged_nodes += dropped;
            } else if dropped > 0 {
                // No room for a bucket: the value stays in the parent's self.
                out.nodes[ni as usize].self_value += other_total;
                out.merged_nodes += dropped;
            }
        }
        out.sort_children();
        out
    }

    fn sort_children(&mut self) {
        let totals: Vec<i64> = self.nodes.iter().map(|n| n.total).collect();
        for n in &mut self.nodes {
            n.children
                .sort_by_key(|&c| std::cmp::Reverse(totals[c as usize]));
        }
    }
}

/// The frame a folded root run becomes: its label in brackets, as pprof writes frames that
/// stand for something other than one function.
fn folded(label: &str) -> &'static str {
    match label {
        "tokio blocking pool" => "[tokio blocking pool]",
        "tokio worker" => "[tokio worker]",
        "program start" => "[program start]",
        _ => "[thread start]",
    }
}

fn count_subtree(nodes: &[TreeNode], i: usize) -> usize {
    1 + nodes[i]
        .children
        .iter()
        .map(|&c| count_subtree(nodes, c as usize))
        .sum::<usize>()
}

struct TreeBuilder<'f> {
    nodes: Vec<TreeNode>,
    index: HashMap<(u32, String), u32>,
    filter: TreeFilter<'f>,
    /// Per node, the current profile's value by label set (an index into `label_sets`).
    by_labels: Vec<HashMap<u32, i64>>,
    label_sets: Vec<String>,
    label_ids: HashMap<String, u32>,
}

impl<'f> TreeBuilder<'f> {
    fn new(filter: TreeFilter<'f>) -> Self {
        let root = TreeNode {
            name: "root".into(),
            file: String::new(),
            line: 0,
            parent: 0,
            self_value: 0,
            total: 0,
            base_total: 0,
            in_base: false,
            children: Vec::new(),
            labels: Vec::new(),
        };
        TreeBuilder {
            nodes: vec![root],
            index: HashMap::new(),
            filter,
            by_labels: vec![HashMap::new()],
            label_sets: Vec::new(),
            label_ids: HashMap::new(),
        }
    }

    /// The label set of `s` as one string, interned; `None` when it has no labels.
    fn label_set(&mut self, s: &crate::profile::Sample) -> Option<u32> {
        if s.labels.is_empty() {
            return None;
        }
        let text = s
            .labels
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(&id) = self.label_ids.get(&text) {
            return Some(id);
        }
        let id = self.label_sets.len() as u32;
        self.label_sets.push(text.clone());
        self.label_ids.insert(text, id);
        Some(id)
    }

    /// Moves each node's largest label sets into the node.
    fn finish_labels(&mut self) {
        for (node, by) in self.nodes.iter_mut().zip(&self.by_labels) {
            let mut sets: Vec<(u32, i64)> = by.iter().map(|(&k, &v)| (k, v)).collect();
            sets.sort_by_key(|&(k, v)| (std::cmp::Reverse(v.abs()), k));
            sets.truncate(NODE_LABEL_SETS);
            node.labels = sets
                .into_iter()
                .map(|(k, v)| (self.label_sets[k as usize].clone(), v))
                .collect();
        }
    }

    fn add(&mut self, p: &Profile, sample_type: &str, is_base: bool) {
        let Some(vi) = p.sample_type_index(sample_type) else {
            return;
        };
        let locs: HashMap<u64, &crate::profile::Location> =
            p.locations.iter().map(|l| (l.id, l)).collect();
        let funcs: HashMap<u64, &crate::profile::Function> =
            p.functions.iter().map(|f| (f.id, f)).collect();
        for s in &p.samples {
            let v = s.values[vi];
            if v == 0 {
                continue;
            }
            // Root first: locations are leaf first, and so are the lines within a location.
            // Each frame: function name, file, line.
            let mut frames: Vec<(&str, &str, i64)> = s
                .location_ids
                .iter()
                .rev()
                .filter_map(|id| locs.get(id))
                .flat_map(|l| l.lines.iter().rev())
                .filter_map(|line| {
                    funcs
                        .get(&line.function_id)
                        .map(|f| (f.name.as_str(), f.filename.as_str(), line.line))
                })
                .collect();
            if let Some(focus) = self.filter.focus {
                if !frames.iter().any(|(f, _, _)| focus(f)) {
                    continue;
                }
            }
            if let Some(hide) = self.filter.hide {
                frames.retain(|(f, _, _)| !hide(f));
            }
            if let Some(callee) = self.filter.callers_of {
                let Some(outermost) = frames.iter().position(|(f, _, _)| *f == callee) else {
                    continue;
                };
                frames.truncate(outermost + 1);
                frames.reverse();
            } else if let Some(code) = self.filter.fold_root {
                let names: Vec<&str> = frames.iter().map(|(f, _, _)| *f).collect();
                let (run, label) = code.root_run(&names);
                if run > 1 {
                    frames.splice(..run, [(folded(label), "", 0)]);
                }
            }
            let group = self
                .filter
                .group_by
                .map(|key| format!("{key}={}", s.label(key).unwrap_or(NO_LABEL)));
            if let Some(g) = &group {
                frames.insert(0, (g.as_str(), "", 0));
            }
            let set = if is_base { None } else { self.label_set(s) };
            let mut at = 0u32;
            self.bump(at, v, is_base, false);
            self.tally(at, set, v);
            let mut last = 0u32;
            for (name, file, line) in frames {
                at = self.child(at, name, file, line);
                self.bump(at, v, is_base, false);
                self.tally(at, set, v);
                last = at;
            }
            self.bump(last, v, is_base, true);
        }
    }

    fn child(&mut self, parent: u32, name: &str, file: &str, line: i64) -> u32 {
        if let Some(&i) = self.index.get(&(parent, name.to_string())) {
            return i;
        }
        let i = self.nodes.len() as u32;
        self.nodes.push(TreeNode {
            name: name.to_string(),
            file: file.to_string(),
            line,
            parent,
            self_value: 0,
            total: 0,
            base_total: 0,
            in_base: false,
            children: Vec::new(),
            labels: Vec::new(),
        });
        self.by_labels.push(HashMap::new());
        self.nodes[parent as usize].children.push(i);
        self.index.insert((parent, name.to_string()), i);
        i
    }

    fn tally(&mut self, i: u32, set: Option<u32>, v: i64) {
        if let Some(set) = set {
            *self.by_labels[i as usize].entry(set).or_insert(0) += v;
        }
    }

    fn bump(&mut self, i: u32, v: i64, is_base: bool, leaf: bool) {
        let n = &mut self.nodes[i as usize];
        match (is_base, leaf) {
            (false, false) => n.total += v,
            (false, true) => n.self_value += v,
            (true, false) => {
                n.base_total += v;
                n.in_base = true;
            }
            (true, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{heap_sample_types, Function, Line, Location, Sample};

    /// A profile whose samples are stacks of function names, root first.
    fn profile(stacks: &[(&[&str], i64)]) -> Profile {
        let mut p = Profile {
            sample_types: heap_sample_types(),
            ..Default::default()
        };
        let mut ids: HashMap<String, u64> = HashMap::new();
        for (stack, v) in stacks {
            let mut loc_ids = Vec::new();
            for name in stack.iter().rev() {
                let next = ids.len() as u64 + 1;
                let id = *ids.entry(name.to_string()).or_insert(next);
                if id == next {
                    p.functions.push(Function {
                        id,
                        name: name.to_string(),
                        ..Default::default()
                    });
                    p.locations.push(Location {
                        id,
                        mapping_id: 1,
                        address: id,
                        lines: vec![Line {
                            function_id: id,
                            line: 1,
                        }],
                    });
                }
                loc_ids.push(id);
            }
            p.samples.push(Sample {
                location_ids: loc_ids,
                values: vec![0, 0, 0, *v],
                labels: vec![],
                num_labels: vec![],
            });
        }
        p
    }

    fn find<'a>(t: &'a CallTree, path: &[&str]) -> &'a TreeNode {
        let mut at = 0usize;
        for name in path {
            at = t.nodes[at]
                .children
                .iter()
                .map(|&c| c as usize)
                .find(|&c| t.nodes[c].name == *name)
                .unwrap_or_else(|| panic!("{name}"));
        }
        &t.nodes[at]
    }

    #[test]
    fn merges_shared_prefixes_and_keeps_self_and_total() {
        let p = profile(&[
            (&["main", "a", "x"], 10),
            (&["main", "a"], 5),
            (&["main", "b", "x"], 3),
        ]);
        let t = CallTree::from_profile(&p, "inuse_space", None);
        assert_eq!(t.nodes[0].total, 18);
        let a = find(&t, &["main", "a"]);
        assert_eq!((a.total, a.self_value), (15, 5));
        assert_eq!(
            find(&t, &["main", "b", "x"]).total,
            3,
            "x under b is not x under a"
        );
        assert_eq!(t.nodes[find_index(&t, "main")].children.len(), 2);
        assert_eq!(
            t.nodes[t.nodes[find_index(&t, "main")].children[0] as usize].name,
            "a",
            "largest child first"
        );
    }

    fn find_index(t: &CallTree, name: &str) -> usize {
        t.nodes.iter().position(|n| n.name == name).unwrap()
    }

    #[test]
    fn a_baseline_gives_growth_shrinkage_and_new_stacks() {
        let base = profile(&[(&["main", "cache"], 100), (&["main", "buffers"], 50)]);
        let now = profile(&[
            (&["main", "cache"], 400),
            (&["main", "buffers"], 20),
            (&["main", "after"], 70),
        ]);
        let t = CallTree::from_profile(&now, "inuse_space", Some(&base));
        let cache = find(&t, &["main", "cache"]);
        assert_eq!(
            (cache.base_total, cache.total, cache.in_base),
            (100, 400, true)
        );
        let buffers = find(&t, &["main", "buffers"]);
        assert!(buffers.total < buffers.base_total);
        let after = find(&t, &["main", "after"]);
        assert_eq!(
            (after.base_total, after.in_base),
            (0, false),
            "new since the baseline"
        );
        assert_eq!(t.nodes[0].base_total, 150);
    }

    #[test]
    fn capping_keeps_the_biggest_paths_and_buckets_the_rest() {
        let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
        let mut stacks: Vec<(Vec<&str>, i64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (vec!["main", n.as_str()], i as i64 + 1))
            .collect();
        stacks.push((vec!["main", "f199", "deep"], 1000));
        let refs: Vec<(&[&str], i64)> = stacks.iter().map(|(s, v)| (s.as_slice(), *v)).collect();
        let full = CallTree::from_profile(&profile(&refs), "inuse_space", None);
        let capped = full.clone().capped(50);
        assert!(capped.nodes.len() <= 50, "{}", capped.nodes.len());
        assert_eq!(
            capped.nodes[0].total, full.nodes[0].total,
            "nothing is lost"
        );
        assert_eq!(
            find(&capped, &["main", "f199", "deep"]).total,
            1000,
            "the biggest path survives"
        );
        let main = find(&capped, &["main"]);
        let child_sum: i64 = main
            .children
            .iter()
            .map(|&c| capped.nodes[c as usize].total)
            .sum();
        assert_eq!(child_sum + main.self_value, main.total);
        assert!(capped.nodes.iter().any(|n| n.name == "other"));
        assert!(capped.merged_nodes > 100);
    }

    #[test]
    fn focus_keeps_only_stacks_through_the_function_and_hide_drops_frames() {
        let p = profile(&[
            (&["main", "a", "x"], 10),
            (&["main", "b"], 5),
            (&["main", "c", "x"], 3),
        ]);
        let is_x = |n: &str| n == "x";
        let focus = TreeFilter {
            focus: Some(&is_x),
            ..Default::default()
        };
        assert_eq!(
            CallTree::filtered(&p, "inuse_space", None, focus).nodes[0].total,
            13,
            "b never reaches x"
        );
        let is_a = |n: &str| n == "a";
        let hide = TreeFilter {
            hide: Some(&is_a),
            ..Default::default()
        };
        let t = CallTree::filtered(&p, "inuse_space", None, hide);
        assert_eq!(t.nodes[0].total, 18, "hiding a frame keeps its samples");
        assert!(!t.nodes.iter().any(|n| n.name == "a"));
        assert_eq!(find(&t, &["main", "x"]).total, 10, "x now hangs off main");
    }

    #[test]
    fn callers_of_a_function_read_upwards_from_it() {
        let p = profile(&[
            (&["main", "a", "x", "leaf"], 10),
            (&["main", "c", "x"], 3),
            (&["main", "b"], 5),
        ]);
        let callers = TreeFilter {
            callers_of: Some("x"),
            ..Default::default()
        };
        let t = CallTree::filtered(&p, "inuse_space", None, callers);
        assert_eq!(t.nodes[0].total, 13);
        assert_eq!(find(&t, &["x", "a", "main"]).total, 10);
        assert_eq!(find(&t, &["x", "c", "main"]).total, 3);
    }

    #[test]
    fn runtime_runs_at_the_root_fold_into_one_labelled_frame() {
        let worker = [
            "std::sys::thread::unix::Thread::new::thread_start",
            "std::panicking::catch_unwind",
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "tokio::runtime::task::harness::poll_future",
        ];
        let leak = [&worker[..], &["app::leak", "alloc::vec::Vec<T>::push"]].concat();
        let serve = [&worker[..], &["app::serve"]].concat();
        let p = profile(&[(&leak, 10), (&serve, 5), (&["main", "app::main"], 2)]);
        let code = UserCode::default();
        let fold = TreeFilter {
            fold_root: Some(&code),
            ..Default::default()
        };
        let t = CallTree::filtered(&p, "inuse_space", None, fold);
        assert_eq!(
            find(&t, &["[tokio worker]"]).total,
            15,
            "one frame for the run"
        );
        assert_eq!(find(&t, &["[tokio worker]", "app::leak"]).total, 10);
        assert_eq!(
            find(&t, &["main", "app::main"]).total,
            2,
            "a run of one stays as it is"
        );
        assert_eq!(t.nodes[0].total, 17);
        let unfolded = CallTree::from_profile(&p, "inuse_space", None);
        assert_eq!(
            find(&unfolded, &worker).total,
            15,
            "without the option, every frame"
        );
    }
}
