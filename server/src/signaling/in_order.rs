//! Puts a connection's numbered frames back in `seq` order (sans-I/O).
//!
//! With rooms in Redis, a node sends the frames its own inputs produce for its own connections
//! at once, and gets the frames other nodes' inputs produce for them through pub/sub. The room
//! numbers them in the order the inputs were committed, but the two paths can swap them on the
//! way: a frame from another node's later input may come before this node's earlier one. A
//! connection's [`InOrder`] holds a frame that comes early until the frames before it are out.

use std::collections::BTreeMap;

/// Frames held for one connection before it counts as broken (a gap that does not fill: the
/// connection is closed and its client resumes from the replay buffer).
pub const HELD_FRAMES: usize = 256;

/// The order of one connection's numbered frames.
#[derive(Debug, Default)]
pub struct InOrder {
    /// The seq to send next; `None` until the connection's join was delivered (until then every
    /// numbered frame is held: the join says where its frames start).
    next: Option<u64>,
    /// Frames that came before their turn, by seq.
    held: BTreeMap<u64, String>,
}

/// A gap stayed open with [`HELD_FRAMES`] frames behind it.
#[derive(Debug, PartialEq, Eq)]
pub struct GapNotFilled;

impl InOrder {
    /// The connection's frames start at `next` (its join was committed): returns the frames held
    /// from there on that are now in turn. Frames before `next` are dropped: the join sent them.
    pub fn start(&mut self, next: u64) -> Vec<(u64, String)> {
        self.held = self.held.split_off(&next);
        self.next = Some(next);
        self.release()
    }

    /// A numbered frame for the connection: returns the frames now in turn (it, and those held
    /// behind it), oldest first. A seq already sent is dropped.
    pub fn arrive(&mut self, seq: u64, text: String) -> Result<Vec<(u64, String)>, GapNotFilled> {
        match self.next {
            Some(next) if seq < next => return Ok(Vec::new()),
            // In turn with nothing held: the usual case, without the map.
            Some(next) if seq == next && self.held.is_empty() => {
                self.next = Some(next + 1);
                return Ok(vec![(seq, text)]);
            }
            _ => {}
        }
        self.held.insert(seq, text);
        let ready = self.release();
        if self.held.len() > HELD_FRAMES {
            return Err(GapNotFilled);
        }
        Ok(ready)
    }

    fn release(&mut self) -> Vec<(u64, String)> {
        let Some(next) = self.next.as_mut() else { return Vec::new() };
        let mut ready = Vec::new();
        while let Some(text) = self.held.remove(next) {
            ready.push((*next, text));
            *next += 1;
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(frames: Vec<(u64, String)>) -> Vec<u64> {
        frames.into_iter().map(|(seq, _)| seq).collect()
    }

    #[test]
    fn frames_in_turn_go_out_at_once_and_an_early_one_waits_for_the_gap() {
        let mut order = InOrder::default();
        assert!(order.start(5).is_empty());
        assert_eq!(seqs(order.arrive(5, "a".into()).unwrap()), [5]);
        assert!(order.arrive(7, "c".into()).unwrap().is_empty());
        assert!(order.arrive(8, "d".into()).unwrap().is_empty());
        let ready = order.arrive(6, "b".into()).unwrap();
        assert_eq!(ready.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), ["b", "c", "d"]);
        assert_eq!(seqs(order.arrive(9, "e".into()).unwrap()), [9]);
    }

    #[test]
    fn frames_before_the_join_wait_for_it_and_those_it_sent_are_not_sent_twice() {
        let mut order = InOrder::default();
        // Another node's frames, committed after the join, come before the join is delivered.
        assert!(order.arrive(4, "x".into()).unwrap().is_empty());
        assert!(order.arrive(3, "w".into()).unwrap().is_empty());
        // The join sent everything through 2 (its replay); 3 is the first after it.
        assert_eq!(seqs(order.start(3)), [3, 4]);
        // A copy of a frame already out is dropped.
        assert!(order.arrive(4, "x".into()).unwrap().is_empty());
    }

    #[test]
    fn a_gap_that_does_not_fill_breaks_the_connection() {
        let mut order = InOrder::default();
        order.start(1);
        for seq in 2..=HELD_FRAMES as u64 + 1 {
            assert!(order.arrive(seq, String::new()).unwrap().is_empty());
        }
        assert_eq!(order.arrive(HELD_FRAMES as u64 + 2, String::new()), Err(GapNotFilled));
    }
}
