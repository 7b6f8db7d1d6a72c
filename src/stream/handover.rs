//! The gate between a session's replay and its live frames (see the hand-over in `mod.rs`).

use parking_lot::Mutex;

use super::{Epoch, Live, Position};

/// One session's gate for one stream: buffers live frames while the session recovers, then
/// passes only those the replay did not cover.
#[derive(Debug)]
pub struct HandOver {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Debug)]
enum State {
    Buffering {
        frames: Vec<Live>,
        overflowed: bool,
    },
    Open {
        epoch: Epoch,
        /// The highest seq of `epoch` the session has had, from the replay or live.
        after: u64,
    },
}

/// What happened to an offered live frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Held until the session opens the gate.
    Buffered,
    /// Passed to the push, which answered whether its queue took it.
    Pushed(bool),
    /// Already covered by the replay (or delivered before), so not pushed again.
    Duplicate,
    /// The buffer was full; [`HandOver::open`] will report [`Overflowed`].
    Dropped,
}

impl Offered {
    /// Whether this counts toward `delivered`: the session has or will have the message.
    pub fn accepted(self) -> bool {
        matches!(
            self,
            Offered::Buffered | Offered::Pushed(true) | Offered::Duplicate
        )
    }
}

/// The buffer filled while the session recovered, so some live frames were dropped.
///
/// The gate is buffering again, empty: recover again with `since` = the position the session
/// has just replayed to (the dropped frames are in history), queue those, and open again. A
/// session that keeps overflowing should be closed so its client reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflowed;

impl std::fmt::Display for Overflowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("live frames overflowed the hand-over buffer during recovery")
    }
}

impl std::error::Error for Overflowed {}

impl HandOver {
    /// A buffering gate that holds at most `limit` frames before the session opens it; a
    /// `history_size` worth is a fair limit, since more than that could not be replayed either.
    pub fn new(limit: usize) -> Self {
        HandOver {
            state: Mutex::new(State::Buffering {
                frames: Vec::new(),
                overflowed: false,
            }),
            limit,
        }
    }

    /// Offers a live frame. `push` puts it in the session's queue and is called under the
    /// gate's lock, so frames reach the queue in the order the engine delivered them.
    pub fn offer(&self, live: &Live, push: impl FnOnce(&Live) -> bool) -> Offered {
        let mut state = self.state.lock();
        match &mut *state {
            State::Buffering { frames, overflowed } => {
                if frames.len() >= self.limit {
                    *overflowed = true;
                    return Offered::Dropped;
                }
                frames.push(live.clone());
                Offered::Buffered
            }
            State::Open { epoch, after } => {
                if *epoch == live.epoch {
                    if live.seq <= *after {
                        return Offered::Duplicate;
                    }
                    *after = live.seq;
                }
                // A frame of another epoch means the stream was re-created: its seqs restart,
                // so comparing them with the old top would drop new messages.
                Offered::Pushed(push(live))
            }
        }
    }

    /// Opens the gate after the session queued `replayed`'s messages (pass
    /// [`Recovery::position`](super::Recovery::position)): pushes the buffered frames the replay
    /// did not cover, in order, and from now on pushes live frames as they come. Returns how
    /// many were pushed. Opening an open gate does nothing.
    pub fn open(
        &self,
        replayed: &Position,
        mut push: impl FnMut(&Live) -> bool,
    ) -> Result<usize, Overflowed> {
        let mut state = self.state.lock();
        let frames = match &mut *state {
            State::Open { .. } => return Ok(0),
            State::Buffering { frames, overflowed } => {
                if *overflowed {
                    frames.clear();
                    *overflowed = false;
                    return Err(Overflowed);
                }
                std::mem::take(frames)
            }
        };
        let mut after = replayed.seq;
        let mut pushed = 0;
        for live in &frames {
            if live.epoch == replayed.epoch {
                if live.seq <= after {
                    continue;
                }
                after = live.seq;
            }
            push(live);
            pushed += 1;
        }
        *state = State::Open {
            epoch: replayed.epoch.clone(),
            after,
        };
        Ok(pushed)
    }

    /// Whether the session has opened the gate.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        matches!(*self.state.lock(), State::Open { .. })
    }
}
