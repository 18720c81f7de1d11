//! The leak from the project's story, in Rust: a Go-style `after` whose timer outlives the code
//! that waited on it, used by a message broker and by a busy loop; and the fix, one timer re-armed
//! with `reset`. And a leak in a service among the noise of a real one ([`service`]).

pub mod cli;
pub mod service;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Go's `time.After` as it behaved before Go 1.23: a channel that receives the time once `d` has
/// passed.
///
/// The timer is a task of its own that sleeps, then sends. Dropping the receiver (as a `select!`
/// does when another branch wins) does not cancel it: the task, its timer entry and the channel
/// stay allocated until the timer fires. Call it in a loop with a long `d` and every iteration
/// leaves one behind.
#[inline(never)]
pub fn after(d: Duration) -> oneshot::Receiver<Instant> {
    let (fired, rx) = oneshot::channel();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        let _ = fired.send(Instant::now());
    });
    rx
}

/// A message delivered to subscribers.
pub type Message = Arc<str>;

/// The broker of the story: it broadcasts each message to every subscriber, waiting at most
/// [`Broker::SEND_TIMEOUT`] for each.
#[derive(Clone)]
pub struct Broker {
    exit: watch::Receiver<bool>,
    fixed: bool,
    /// The heap labels of the publishers, one per group of subscribers
    /// (`subscriber_group=0`, `1`, `2`): what each publisher allocates, the timers `after`
    /// leaves behind included, is counted under its group.
    groups: [heapsight::Labels; 3],
}

impl Broker {
    pub const SEND_TIMEOUT: Duration = Duration::from_millis(5);

    /// A broker; `fixed` chooses the re-armed timer over `after`. Setting `exit` to true stops
    /// every broadcast in flight.
    pub fn new(exit: watch::Receiver<bool>, fixed: bool) -> Broker {
        let group = |g: usize| heapsight::Labels::new([("subscriber_group", g.to_string())]);
        Broker {
            exit,
            fixed,
            groups: [group(0), group(1), group(2)],
        }
    }

    /// Sends `msg` to every subscriber, split over one to three tasks as the story's broker
    /// splits it over goroutines, each labelled with its group of subscribers. Returns at once;
    /// the tasks finish on their own.
    pub fn broadcast(&self, msg: Message, subscribers: Arc<[mpsc::Sender<Message>]>) {
        let count = subscribers.len();
        let concurrency = match count {
            c if c > 1000 => 3,
            c if c > 100 => 2,
            _ => 1,
        };
        for start in 0..concurrency {
            let (msg, subscribers, exit) = (msg.clone(), subscribers.clone(), self.exit.clone());
            let labels = self.groups[start];
            if self.fixed {
                tokio::spawn(labels.bind(publish_with_one_timer(
                    start,
                    concurrency,
                    msg,
                    subscribers,
                    exit,
                )));
            } else {
                tokio::spawn(labels.bind(publish_with_after(
                    start,
                    concurrency,
                    msg,
                    subscribers,
                    exit,
                )));
            }
        }
    }
}

/// The leaky publisher: a new `after` for every send.
async fn publish_with_after(
    start: usize,
    step: usize,
    msg: Message,
    subscribers: Arc<[mpsc::Sender<Message>]>,
    mut exit: watch::Receiver<bool>,
) {
    for sub in subscribers.iter().skip(start).step_by(step) {
        tokio::select! {
            _ = sub.send(msg.clone()) => {}
            _ = after(Broker::SEND_TIMEOUT) => {}
            _ = exit.changed() => return,
        }
    }
}

/// The fix: one timer per publisher, re-armed before each send (Go's `NewTimer` and `Reset`).
async fn publish_with_one_timer(
    start: usize,
    step: usize,
    msg: Message,
    subscribers: Arc<[mpsc::Sender<Message>]>,
    mut exit: watch::Receiver<bool>,
) {
    let idle = tokio::time::sleep(Broker::SEND_TIMEOUT);
    tokio::pin!(idle);
    for sub in subscribers.iter().skip(start).step_by(step) {
        idle.as_mut().reset(Instant::now() + Broker::SEND_TIMEOUT);
        tokio::select! {
            _ = sub.send(msg.clone()) => {}
            _ = &mut idle => {}
            _ = exit.changed() => return,
        }
    }
}

/// The story's second program: read a busy channel in a loop, giving up after three minutes of
/// silence. The leaky version asks `after` for a fresh three-minute timer on every message.
pub async fn busy_loop(mut messages: mpsc::Receiver<Message>, fixed: bool) -> u64 {
    const IDLE: Duration = Duration::from_secs(180);
    let mut received = 0u64;
    if fixed {
        let idle = tokio::time::sleep(IDLE);
        tokio::pin!(idle);
        loop {
            idle.as_mut().reset(Instant::now() + IDLE);
            tokio::select! {
                m = messages.recv() => match m { Some(_) => received += 1, None => return received },
                _ = &mut idle => return received,
            }
        }
    }
    loop {
        tokio::select! {
            m = messages.recv() => match m { Some(_) => received += 1, None => return received },
            _ = after(IDLE) => return received,
        }
    }
}
