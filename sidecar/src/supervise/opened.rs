//! The calls opened whose supervisors are still to start, oldest first,
//! in shards: each worker thread pushes to a shard of its own, so calls
//! opened on different threads never wait on one lock. The starter takes
//! from every shard.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Shards: more than the worker threads of any machine this runs on, so
/// two threads rarely share one.
const SHARDS: usize = 16;

/// One shard's calls, each with when it opened; `None` once closed.
type Shard<T> = Mutex<Option<VecDeque<(Instant, T)>>>;

#[derive(Debug)]
pub(super) struct Opened<T> {
    shards: Box<[Shard<T>]>,
    /// Told when a call comes to an empty shard.
    came: Notify,
}

/// A shard's calls, whatever a panic elsewhere left: a poisoned shard is
/// still drained, never left holding calls.
fn lock<T>(shard: &Shard<T>) -> std::sync::MutexGuard<'_, Option<VecDeque<(Instant, T)>>> {
    match shard.lock() {
        Ok(calls) => calls,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl<T> Opened<T> {
    pub(super) fn new() -> Self {
        Opened {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Some(VecDeque::new())))
                .collect(),
            came: Notify::new(),
        }
    }

    /// Queues `call`, opened at `began`; gives it back once closed.
    pub(super) fn push(&self, began: Instant, call: T) -> Result<(), T> {
        let Some(shard) = self.shards.get(shard()) else {
            return Err(call);
        };
        let first = match lock(shard).as_mut() {
            Some(queue) => {
                queue.push_back((began, call));
                queue.len() == 1
            }
            None => return Err(call),
        };
        if first {
            self.came.notify_one();
        }
        Ok(())
    }

    /// When the oldest call still queued opened.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.shards
            .iter()
            .filter_map(|shard| lock(shard).as_ref()?.front().map(|(began, _)| *began))
            .min()
    }

    /// Waits until a call comes to an empty shard (or came since asked).
    pub(super) async fn came(&self) {
        self.came.notified().await;
    }

    /// Moves every call opened by `by` into `due`.
    pub(super) fn take_opened_by(&self, by: Instant, due: &mut Vec<T>) {
        for shard in self.shards.iter() {
            let mut calls = lock(shard);
            let Some(queue) = calls.as_mut() else {
                continue;
            };
            while queue.front().is_some_and(|(began, _)| *began <= by) {
                due.extend(queue.pop_front().map(|(_, call)| call));
            }
        }
    }

    /// Closes every shard (the starter is gone): what is queued is
    /// dropped, what comes is given back.
    pub(super) fn close(&self) {
        for shard in self.shards.iter() {
            let left = lock(shard).take();
            drop(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn calls_come_out_by_when_they_opened_from_every_shard() {
        let opened = Opened::new();
        let start = Instant::now();
        // Four threads push a call each, into their own shards or not:
        // whichever, each call comes out once it is due, not before.
        std::thread::scope(|scope| {
            for i in 0..4 {
                let opened = &opened;
                scope.spawn(move || opened.push(start, i).unwrap());
            }
        });
        assert_eq!(opened.oldest(), Some(start));
        let mut due = Vec::new();
        opened.take_opened_by(start - Duration::from_millis(1), &mut due);
        assert!(due.is_empty());
        opened.take_opened_by(start, &mut due);
        due.sort_unstable();
        assert_eq!(due, [0, 1, 2, 3]);
        assert_eq!(opened.oldest(), None);
        opened.close();
        assert_eq!(opened.push(start, 9), Err(9));
    }
}
