//! Heap labels from `tracing` spans, and labels that follow spawned tokio tasks.
//!
//! [`SpanLabels`] is a `tracing_subscriber` layer. Each span records the fields you choose, and
//! its name if you ask for it, as a [`heapsight::Labels`] set, and that set is current on the
//! thread while the span is entered. Allocations sampled meanwhile are counted under those
//! labels, and `go tool pprof -tags` and the UI split the heap by them. An `#[instrument]`ed
//! handler, or every route under tower-http's `TraceLayer`, then labels the heap with no other
//! code:
//!
//! ```
//! use tracing_subscriber::prelude::*;
//! heapsight::global_allocator!(std::alloc::System);
//!
//! tracing_subscriber::registry()
//!     .with(heapsight_tracing::SpanLabels::new().field("tenant"))
//!     .init();
//! heapsight::set_sample_rate(1);
//!
//! #[tracing::instrument]
//! fn load(tenant: &str) -> Vec<u8> {
//!     vec![0; 1 << 20]
//! }
//! let before = heapsight::snapshot();
//! let kept = load("acme");
//! let delta = heapsight::snapshot().delta(&before);
//! let held = delta.inuse_space_under(heapsight::Labels::new([("tenant", "acme")]));
//! assert!(held >= 1 << 20, "{held} bytes under tenant=acme");
//! # drop(kept);
//! ```
//!
//! **What a span's labels are.**
//! - A span's labels are its parent span's, plus the chosen fields it records itself: a field of
//!   the span overrides the same key from its parent.
//! - Fields recorded later with `Span::record` count from then on.
//! - A span with no labels of its own and none from its ancestors leaves the thread's current
//!   labels as they are, for example a set from [`heapsight::Labels::run`].
//! - Values are the fields' `Display` form for `%` fields and strings, and their `Debug` form
//!   otherwise. Choose fields with few values (a route, a tenant, a task kind), not a request id:
//!   past [`heapsight::labels::MAX_LABEL_SETS`] distinct sets, new ones are counted as `other`.
//!
//! **What follows a task, and what does not.**
//! - A future instrumented with a span (`#[instrument]` on an `async fn`, or
//!   `.instrument(span)`) has its labels current during each poll, on whichever worker thread
//!   polls it. So does one wrapped with [`heapsight::Labels::bind`].
//! - A task spawned from inside one starts with no labels of its own. `tokio::spawn` does not
//!   carry spans or labels into the new task.
//! - [`spawn`] carries the labels current at the call. Tracing's `.in_current_span()` carries
//!   the span, and the span's labels with it.
//! - The spawn's own allocation (tokio's task cell, holding the future) is made by the
//!   spawning code and counts under the labels current there.
//! - Blocking work on `spawn_blocking` threads gets labels only if they are entered there.
//! - Labels are read when the allocation is sampled. A block freed later, on any thread, comes
//!   off the labels it was allocated under.

use heapsight::Labels;
use std::cell::RefCell;
use std::fmt;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A `tracing_subscriber` layer that makes chosen span fields the current heap labels while
/// each span is entered (see the crate docs).
#[derive(Clone, Debug, Default)]
pub struct SpanLabels {
    fields: Vec<&'static str>,
    name_key: Option<&'static str>,
}

impl SpanLabels {
    /// A layer that labels with nothing until given fields or a key for span names.
    pub fn new() -> SpanLabels {
        SpanLabels::default()
    }

    /// Labels with span field `name`, under the field's own name as the key. tower-http's
    /// `TraceLayer` records `method`, `uri` and `version`.
    pub fn field(mut self, name: &'static str) -> SpanLabels {
        if !self.fields.contains(&name) {
            self.fields.push(name);
        }
        self
    }

    /// Labels with each span's name too, under `key` (e.g. `"span"`). The innermost span's name wins.
    pub fn span_name(mut self, key: &'static str) -> SpanLabels {
        self.name_key = Some(key);
        self
    }
}

/// What a span keeps in its extensions: the labels it makes current, and how they were made,
/// so that a later `record` can add to them.
struct SpanSet {
    /// The parent's labels (and the span's name, if asked for).
    base: Labels,
    /// The chosen fields the span has recorded so far, in the order first recorded.
    values: Vec<(&'static str, String)>,
    labels: Labels,
}

/// Collects the chosen fields' values.
struct Chosen<'a> {
    fields: &'a [&'static str],
    values: &'a mut Vec<(&'static str, String)>,
}

impl Chosen<'_> {
    fn put(&mut self, field: &Field, value: String) {
        let Some(&name) = self.fields.iter().find(|f| **f == field.name()) else {
            return;
        };
        match self.values.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.values.push((name, value)),
        }
    }
}

impl Visit for Chosen<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%` fields arrive here too, as a wrapper whose Debug is the value's Display.
        self.put(field, format!("{value:?}"));
    }
}

thread_local! {
    /// Per entered span on this thread, innermost last: the labels to bring back on exit, or
    /// `None` for a span that left them alone.
    static ENTERED: RefCell<Vec<Option<Labels>>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for SpanLabels
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanSet>().map(|s| s.labels));
        let mut base = parent.unwrap_or(Labels::NONE);
        if let Some(key) = self.name_key {
            base = base.with([(key, attrs.metadata().name())]);
        }
        let mut values = Vec::new();
        attrs.record(&mut Chosen {
            fields: &self.fields,
            values: &mut values,
        });
        let labels = if values.is_empty() {
            base
        } else {
            base.with(values.iter().map(|(k, v)| (*k, v.as_str())))
        };
        span.extensions_mut().insert(SpanSet {
            base,
            values,
            labels,
        });
    }

    fn on_record(&self, id: &Id, record: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(set) = ext.get_mut::<SpanSet>() else {
            return;
        };
        let before = set.values.clone();
        record.record(&mut Chosen {
            fields: &self.fields,
            values: &mut set.values,
        });
        if set.values != before {
            set.labels = set
                .base
                .with(set.values.iter().map(|(k, v)| (*k, v.as_str())));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let labels = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<SpanSet>().map(|s| s.labels))
            .unwrap_or(Labels::NONE);
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if e.len() == e.capacity() {
                // The stack's room is the profiler's, not the labels' nor the service's.
                heapsight::own::run(heapsight::own::Part::Tables, || e.reserve(16));
            }
            e.push(None);
            if labels != Labels::NONE {
                *e.last_mut().expect("just pushed") = Some(heapsight::labels::swap(labels));
            }
        });
    }

    fn on_exit(&self, _id: &Id, _ctx: Context<'_, S>) {
        ENTERED.with(|e| {
            if let Some(Some(previous)) = e.borrow_mut().pop() {
                heapsight::labels::swap(previous);
            }
        });
    }
}

/// `tokio::spawn`, with the labels current here current in the task during each of its polls.
///
/// ```
/// heapsight::global_allocator!(std::alloc::System);
/// use heapsight::Labels;
///
/// let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
/// let job = Labels::new([("job", "compact")]);
/// let inside = rt.block_on(async move {
///     let task = job.run(|| heapsight_tracing::spawn(async { Labels::current() }));
///     task.await.unwrap()
/// });
/// assert_eq!(inside, job);
/// ```
#[cfg(feature = "tokio")]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(heapsight::labels::inherit(future))
}
