//! How entries leave the cache: evicted oldest first, swept when
//! expired, replaced, or taken by a change of choices; each gives back
//! what it counted and leaves the index of choices.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::answer::{Cacheable, SLOT_BYTES};
use super::choices::ChoiceIndex;
use super::{Books, Cached, DecisionCache};

impl<A: Cacheable> DecisionCache<A> {
    /// Gives back what an entry that left the map counted: its bytes, and
    /// its answer's if it held the last copy the table shares.
    pub(super) fn release(
        &self,
        answers: &mut HashMap<u64, Arc<A>>,
        index: &mut ChoiceIndex,
        digest: u64,
        gone: Cached<A>,
    ) {
        self.bytes.fetch_sub(gone.bytes as usize, Ordering::Relaxed);
        if let Some(read) = gone.read {
            index.remove(read, digest, gone.serial);
        }
        let Some(content) = gone.shared_as else {
            return;
        };
        // Two holders: the table and the entry that went.
        if Arc::strong_count(&gone.answer) == 2
            && answers
                .get(&content)
                .is_some_and(|kept| Arc::ptr_eq(kept, &gone.answer))
        {
            answers.remove(&content);
            self.bytes
                .fetch_sub(gone.answer.heap_bytes(), Ordering::Relaxed);
        }
    }

    /// Drops the answers of the table no one holds any more (a hit held one
    /// while its last entry went).
    pub(super) fn drop_unheld_answers(&self, books: &mut Books<A>) {
        let mut freed = 0;
        books.answers.retain(|_, answer| {
            let unheld = Arc::strong_count(answer) == 1;
            if unheld {
                freed += answer.heap_bytes();
            }
            !unheld
        });
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Drops the entry of the oldest slot of either queue; false when both
    /// are empty.
    pub(super) fn evict_oldest(&self, books: &mut Books<A>) -> bool {
        let Books {
            queues,
            answers,
            choices,
        } = books;
        let [permits, denials] = queues;
        let queue = match (permits.front(), denials.front()) {
            (Some(p), Some(d)) => {
                if p.serial < d.serial {
                    permits
                } else {
                    denials
                }
            }
            (Some(_), None) => permits,
            (None, Some(_)) => denials,
            (None, None) => return false,
        };
        if let Some(slot) = queue.pop_front() {
            self.bytes.fetch_sub(SLOT_BYTES, Ordering::Relaxed);
            if self.remove(answers, choices, slot.digest, slot.serial) {
                self.metrics.evictions.inc();
            }
        }
        true
    }

    /// Removes the entry stored as `serial` under `digest`, unless a later
    /// store replaced it. True if an entry went.
    pub(super) fn remove(
        &self,
        answers: &mut HashMap<u64, Arc<A>>,
        index: &mut ChoiceIndex,
        digest: u64,
        serial: u64,
    ) -> bool {
        match self
            .entries
            .remove_if(&digest, |_, cached| cached.serial == serial)
        {
            Some((_, cached)) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
                self.release(answers, index, digest, cached);
                true
            }
            None => false,
        }
    }

    /// Drops entries past their TTL and the stale window, oldest first.
    pub(super) fn sweep_locked(&self, books: &mut Books<A>, now: u64) -> usize {
        let Books {
            queues,
            answers,
            choices,
        } = books;
        let mut swept = 0;
        for queue in queues.iter_mut() {
            while queue.front().is_some_and(|slot| slot.dead_at <= now) {
                if let Some(slot) = queue.pop_front() {
                    self.bytes.fetch_sub(SLOT_BYTES, Ordering::Relaxed);
                    if self.remove(answers, choices, slot.digest, slot.serial) {
                        swept += 1;
                    }
                }
            }
        }
        swept
    }
}
