//! Connections shared between targets, and the descriptor budget they are
//! counted against.
//!
//! **Sharing.** Targets that name the same server with the same credentials
//! and connection settings (the whole URL: user, password, database or db
//! index; the password kept apart; the TLS CA file; the timeout) share one
//! kept connection per purpose (polls; heartbeat writes), instead of one
//! each: 10,000 targets on one pair hold a handful of descriptors, not
//! 20,000. The key that says "same" is the secret-bearing settings
//! themselves, held in memory only: [`ShareKey`] has no `Display`, its
//! `Debug` prints nothing of it, and it is never logged. Targets on
//! different servers (or with another password) have different keys and
//! never share, so a bad or hanging server delays only its own targets.
//!
//! A shared connection that fails is dropped once for all its sharers: each
//! handle remembers the generation it was given, and [`Slot::drop_if`] drops
//! the connection only while it is still that generation, so sharers that
//! saw the same failure do not each throw away the fresh connection the
//! first of them made. The next call (the next poll of any sharer)
//! connects again; connecting is done by one caller at a time per key,
//! so a server coming back sees one connection, not a storm. Only a
//! failure that may have lost the connection drops it
//! ([`crate::probe::ProbeError::connection_intact`], set by each driver's
//! `classify`; the kinds call the handle's `reset_after`): an error the
//! server answered on a usable session (a table the user may not read, a
//! key of another type) fails its own target, not its sharers' connection.
//!
//! **Busy is not lost.** A request that times out on a shared connection
//! may only have waited behind other sharers' requests: the server answers
//! one statement (Postgres) or command (Redis) at a time per connection.
//! Dropping the connection then would throw away every sharer's request in
//! flight and make them all time out and reconnect: with thousands of
//! sharers, one slow moment became a collapse where no target succeeded
//! (the 10,000-target benchmark). So a timeout drops the connection only
//! when nobody got an answer on it within the timeout
//! ([`Slot::drop_if_silent`]; the drivers mark answers with
//! [`Slot::answered`]); a connection that broke is seen closed by the
//! driver and replaced on the next call, and an error that may have lost it
//! still drops it at once ([`Slot::drop_if`]).
//!
//! **Turns.** At most [`TURNS`] sharers use one connection at a time (a
//! driver takes a [`Turn`] for the length of its requests); the others wait
//! in line, in order, without sending anything. A request whose target gave
//! up waiting is never sent, so when targets ask more of a server than it
//! can answer, the server spends its time on requests someone still waits
//! for, instead of on a queue of abandoned ones while every new request
//! times out behind them.
//!
//! **Descriptor budget.** Every connection the drivers keep (shared or
//! not) takes a [`Permit`] from a process-wide count, limited to the
//! open-file limit minus what HTTP needs (set by the daemon at start,
//! [`set_descriptor_limit`]). A target that would exceed it fails its poll
//! with a reason that names the limit and what to do (raise
//! `LimitNOFILE`), never with `Too many open files` from somewhere else,
//! and the HTTP listener keeps its descriptors.
//!
//! These are process-wide statics (unlike the other self-metrics): open
//! files are a property of the process, and two exporters in one process
//! (the tests) may share a connection as two targets of one exporter do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::probe::{FailureReason, ProbeError};

/// What makes two connections the same: the settings that reach the
/// server, secrets included. Compared whole (no hash that could collide
/// into another user's connection), never shown.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ShareKey(Arc<[u8]>);

impl std::fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareKey(..)")
    }
}

impl ShareKey {
    /// A key from parts, each length-prefixed so that no two different
    /// lists of parts give the same bytes.
    pub fn new(parts: &[&[u8]]) -> ShareKey {
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for part in parts {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        ShareKey(bytes.into())
    }

    /// The key's bytes, to build a longer key; never to show.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What a kept connection is used for: polls and heartbeat writes keep
/// apart, so a slow poll never delays a heartbeat (and the reverse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Poll,
    Heartbeat,
}

impl Purpose {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Purpose::Poll => b"poll",
            Purpose::Heartbeat => b"heartbeat",
        }
    }
}

/// The slots of one driver, by key. A slot lives while a target holds it
/// (a reload that removes the last sharer closes the connection).
pub struct Registry<C: 'static> {
    slots: Mutex<HashMap<ShareKey, Weak<Slot<C>>>>,
}

impl<C: Clone + Send + 'static> Registry<C> {
    pub fn new() -> Registry<C> {
        Registry {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The slot for `key`, shared with every other holder of the key.
    pub fn slot(&'static self, key: ShareKey) -> Arc<Slot<C>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(&key).and_then(Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(Slot {
            key: key.clone(),
            registry: self,
            state: Mutex::new(State {
                live: None,
                generation: 0,
            }),
            connecting: tokio::sync::Mutex::new(()),
            turns: tokio::sync::Semaphore::new(TURNS),
        });
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }

    /// How many keys have a slot (for tests).
    pub fn len(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.values().filter(|s| s.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C: Clone + Send + 'static> Default for Registry<C> {
    fn default() -> Self {
        Registry::new()
    }
}

/// One kept connection (or none yet) for one key.
pub struct Slot<C: 'static> {
    key: ShareKey,
    registry: &'static Registry<C>,
    state: Mutex<State<C>>,
    /// Held while connecting: one attempt at a time per key.
    connecting: tokio::sync::Mutex<()>,
    /// The sharers' turns on the connection (see the module doc).
    turns: tokio::sync::Semaphore,
}

/// How many sharers may use one connection at a time. Enough to keep a
/// server busy over a pipelined connection (each request waits for the
/// ones before it: more in flight only adds waiting), few enough that a
/// request that waited its whole turn out was never sent.
pub const TURNS: usize = 32;

/// A sharer's turn on a connection, given back when dropped.
pub struct Turn<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

struct State<C> {
    live: Option<Live<C>>,
    /// Of the last connection made (0: none yet).
    generation: u64,
}

struct Live<C> {
    connection: C,
    generation: u64,
    /// When a sharer last got an answer on it (see [`Slot::answered`]).
    answered: Option<Instant>,
    _permit: Permit,
}

impl<C: Clone + Send + 'static> Slot<C> {
    /// The live connection and its generation, if any.
    pub fn current(&self) -> Option<(C, u64)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .live
            .as_ref()
            .map(|live| (live.connection.clone(), live.generation))
    }

    /// The live connection, or a new one made by `connect` (after taking a
    /// descriptor from the budget). Callers bound this with their own
    /// deadline; one that gives up while connecting lets the next try.
    pub async fn get_or_connect<F, Fut>(&self, connect: F) -> Result<(C, u64), ProbeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<C, ProbeError>>,
    {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        // Another sharer may have connected while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let permit = Permit::take()?;
        let connection = connect().await?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.generation += 1;
        let generation = state.generation;
        state.live = Some(Live {
            connection: connection.clone(),
            generation,
            answered: Some(Instant::now()),
            _permit: permit,
        });
        Ok((connection, generation))
    }

    /// Waits for a turn on the connection (see the module doc). Cancel-safe:
    /// a caller that gives up leaves the line.
    pub async fn turn(&self) -> Turn<'_> {
        match self.turns.acquire().await {
            Ok(permit) => Turn { _permit: permit },
            // Never closed.
            Err(_) => unreachable!("the turns of a slot are never closed"),
        }
    }

    /// A sharer got an answer on connection `generation` (a reply, or an
    /// error the server sent on a session it keeps): it is alive.
    pub fn answered(&self, generation: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = state.live.as_mut().filter(|l| l.generation == generation) {
            live.answered = Some(Instant::now());
        }
    }

    /// Drops the connection after a failure seen on `generation`, unless a
    /// newer one replaced it already (another sharer's reset and reconnect).
    pub fn drop_if(&self, generation: u64) {
        self.drop_when(generation, |_| true);
    }

    /// After a timeout on `generation`: drops the connection only if no
    /// sharer got an answer on it within `window` (it is lost, or the
    /// server hangs); one that answers others is only busy.
    pub fn drop_if_silent(&self, generation: u64, window: Duration) {
        self.drop_when(generation, |live| {
            live.answered.is_none_or(|at| at.elapsed() >= window)
        });
    }

    /// After a failed request on `generation`: an error the server
    /// answered on a usable session shows the connection alive
    /// ([`ProbeError::connection_intact`]); a timeout drops it only if it is
    /// silent for `window` ([`Slot::drop_if_silent`]); any other failure
    /// may have lost it and drops it ([`Slot::drop_if`]).
    pub fn after_failure(&self, generation: u64, error: &ProbeError, window: Duration) {
        if error.connection_intact {
            self.answered(generation);
        } else if error.reason == FailureReason::Timeout {
            self.drop_if_silent(generation, window);
        } else {
            self.drop_if(generation);
        }
    }

    fn drop_when(&self, generation: u64, lost: impl FnOnce(&Live<C>) -> bool) {
        let dropped = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .live
                .as_ref()
                .is_some_and(|live| live.generation == generation && lost(live))
            {
                state.live.take()
            } else {
                None
            }
        };
        // Closed outside the lock.
        drop(dropped);
    }
}

impl<C: 'static> Drop for Slot<C> {
    fn drop(&mut self) {
        let mut slots = self
            .registry
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slots.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            slots.remove(&self.key);
        }
    }
}

/// One descriptor of the budget, given back when dropped.
pub struct Permit(());

/// Connections the drivers keep open now.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// The most they may keep (`usize::MAX`: no limit set, as in a library
/// use without the daemon's start-up).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

impl Permit {
    /// A descriptor for a new connection, or the reason there is none.
    pub fn take() -> Result<Permit, ProbeError> {
        let limit = LIMIT.load(Ordering::Relaxed);
        let taken = OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < limit).then_some(open + 1)
        });
        match taken {
            Ok(_) => Ok(Permit(())),
            Err(open) => Err(ProbeError::new(
                FailureReason::Connect,
                format!(
                    "no file descriptor left for another connection: {open} connections are open, the most the open-file limit allows after HTTP's share ({limit}); raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or watch fewer distinct servers and users"
                ),
            )),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets the budget: the open-file limit minus the descriptors HTTP and the
/// process need. Called once by the daemon at start.
pub fn set_descriptor_limit(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
}

/// The budget, if one was set.
pub fn descriptor_limit() -> Option<usize> {
    let limit = LIMIT.load(Ordering::Relaxed);
    (limit != usize::MAX).then_some(limit)
}

/// Connections the drivers keep open now (shared ones once).
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_compared_whole_and_never_shown() {
        let a = ShareKey::new(&[b"redis://u:hunter2@h:1/0", b"poll"]);
        let b = ShareKey::new(&[b"redis://u:hunter2@h:1/0", b"poll"]);
        let other_password = ShareKey::new(&[b"redis://u:hunter3@h:1/0", b"poll"]);
        // Length-prefixed: moving a byte between parts gives another key.
        let shifted = ShareKey::new(&[b"redis://u:hunter2@h:1/0p", b"oll"]);
        assert_eq!(a, b);
        assert_ne!(a, other_password);
        assert_ne!(a, shifted);
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_failure_drops_the_connection_once_for_all_sharers() {
        static REGISTRY: std::sync::LazyLock<Registry<u32>> =
            std::sync::LazyLock::new(Registry::new);
        let key = ShareKey::new(&[b"test-generation"]);
        let one = REGISTRY.slot(key.clone());
        let two = REGISTRY.slot(key.clone());
        assert!(Arc::ptr_eq(&one, &two));
        let (_, first) = one.get_or_connect(|| async { Ok(1) }).await.unwrap();
        // Both sharers saw the failure on the first connection: the first
        // reset drops it, the second one's (stale) reset keeps the fresh one.
        one.drop_if(first);
        let (fresh, second) = two.get_or_connect(|| async { Ok(2) }).await.unwrap();
        assert_eq!((fresh, second), (2, first + 1));
        one.drop_if(first);
        assert_eq!(two.current(), Some((2, second)));
        drop((one, two));
        assert_eq!(REGISTRY.len(), 0, "the last holder's drop removes the slot");
    }

    /// A timeout on a connection that answers other sharers keeps it (busy
    /// is not lost); one on a connection nobody got an answer on within
    /// the window drops it; an error that may have lost it drops it anyway.
    /// (Sleeps only lengthen what is measured, so a slow machine cannot
    /// turn a "dropped" into a "kept".)
    #[tokio::test]
    async fn a_timeout_drops_a_connection_only_when_it_answers_nobody() {
        static REGISTRY: std::sync::LazyLock<Registry<u32>> =
            std::sync::LazyLock::new(Registry::new);
        let slot = REGISTRY.slot(ShareKey::new(&[b"test-busy"]));
        let window = Duration::from_millis(200);
        let (_, first) = slot.get_or_connect(|| async { Ok(1) }).await.unwrap();
        slot.drop_if_silent(first, Duration::from_secs(60));
        assert_eq!(
            slot.current(),
            Some((1, first)),
            "just made: as good as answered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        slot.answered(first);
        slot.drop_if_silent(first, window);
        assert_eq!(
            slot.current(),
            Some((1, first)),
            "another sharer got an answer: busy, not lost"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        slot.drop_if_silent(first, window);
        assert_eq!(slot.current(), None, "no answer for 300 ms: lost");

        // An answer on the old connection does not keep the new one alive.
        let (_, second) = slot.get_or_connect(|| async { Ok(2) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        slot.answered(first);
        slot.drop_if_silent(second, window);
        assert_eq!(
            slot.current(),
            None,
            "an answer on another generation counted"
        );

        let (_, third) = slot.get_or_connect(|| async { Ok(3) }).await.unwrap();
        slot.answered(third);
        slot.drop_if(third);
        assert_eq!(
            slot.current(),
            None,
            "an error that lost it drops it at once"
        );
    }

    /// At most TURNS sharers hold a turn; the next waits, and one that gives
    /// up waiting leaves the line without taking a turn.
    #[tokio::test]
    async fn sharers_take_turns() {
        static REGISTRY: std::sync::LazyLock<Registry<u32>> =
            std::sync::LazyLock::new(Registry::new);
        let slot = REGISTRY.slot(ShareKey::new(&[b"test-turns"]));
        let mut held: Vec<Turn<'_>> =
            futures::future::join_all((0..TURNS).map(|_| slot.turn())).await;
        let waited = tokio::time::timeout(Duration::from_millis(50), slot.turn()).await;
        assert!(waited.is_err(), "a turn beyond {TURNS} was given");
        held.pop();
        let next = tokio::time::timeout(Duration::from_millis(50), slot.turn()).await;
        assert!(
            next.is_ok(),
            "a turn given back was not taken by the next in line"
        );
    }
}
