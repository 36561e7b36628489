//! Following a pair across a promotion (SPEC section 11): which configured
//! side accepts writes, split brain, and the loss a promotion actually took.
//!
//! A pair kind (`postgres`, `redis`; `mysql` plugs in the same way) reports
//! on every poll what it saw of each configured side as [`PairRoles`]:
//! whether the server at `primary_url` and the one at `replica_url` accept
//! writes, the newest heartbeat of this exporter each holds, and its
//! replication-stream positions. Nothing here assumes the configured roles:
//!
//! - [`WriterSide`] tells a probe's heartbeat writer where to write: the side
//!   last seen alone accepting writes. After a promotion the heartbeat goes
//!   to the promoted side, so the first heartbeat it accepts is measured and,
//!   once the old primary is rebuilt as its replica, the reverse direction
//!   has a canary too.
//! - [`Direction`] tells a probe which side to measure as the source: it
//!   flips only once the other side is seen following (not accepting
//!   writes), so a promoted replica whose old primary is gone is still
//!   measured (and shown) as the configured replica.
//! - [`PromotionWatch`] (kept per target in the store) notices the
//!   promotion, latches split brain, keeps the exposure predicted just
//!   before, and measures the loss: the newest heartbeat the old primary
//!   acknowledged minus the newest heartbeat the promoted side holds, both
//!   on this exporter's clock.
//!
//! A new pair kind plugs in by filling `Measurement::roles` on every poll
//! (and, with a heartbeat, writing where its [`WriterSide`] says); the
//! watch, the verdict, the metrics and the drill then work unchanged.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One of the two configured servers of a pair: the one at `primary_url`
/// or the one at `replica_url`, whatever role it has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConfiguredSide {
    #[default]
    Primary,
    Replica,
}

impl ConfiguredSide {
    pub fn other(self) -> ConfiguredSide {
        match self {
            ConfiguredSide::Primary => ConfiguredSide::Replica,
            ConfiguredSide::Replica => ConfiguredSide::Primary,
        }
    }

    /// The config key that names this server.
    pub fn url_key(self) -> &'static str {
        match self {
            ConfiguredSide::Primary => "primary_url",
            ConfiguredSide::Replica => "replica_url",
        }
    }

    fn index(self) -> usize {
        match self {
            ConfiguredSide::Primary => 0,
            ConfiguredSide::Replica => 1,
        }
    }
}

/// Which way a poll measured replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `primary_url` → `replica_url`, as configured.
    #[default]
    Forward,
    /// `replica_url` → `primary_url`: after a promotion and a failback
    /// (the old primary rebuilt as a replica of the promoted side).
    Reverse,
}

impl Direction {
    /// The configured side measured as the source.
    pub fn source(self) -> ConfiguredSide {
        match self {
            Direction::Forward => ConfiguredSide::Primary,
            Direction::Reverse => ConfiguredSide::Replica,
        }
    }

    /// The configured side measured as the replica.
    pub fn replica(self) -> ConfiguredSide {
        self.source().other()
    }
}

/// What one poll saw of one configured server. `None` fields were not
/// learned (the server did not answer, or the kind cannot tell).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideSeen {
    /// Whether it accepts writes (Postgres: not in recovery; Redis:
    /// `role:master`; MySQL: not `read_only` and no replica threads).
    pub writable: Option<bool>,
    /// The newest heartbeat of this exporter it holds (this exporter's
    /// clock), when it was read on this poll.
    pub heartbeat: Option<SystemTime>,
    /// On a server accepting writes: where its replication stream is now
    /// (Postgres `pg_current_wal_lsn()`, Redis `master_repl_offset`).
    pub write_position: Option<u64>,
    /// What it applied from its source; on a promoted server, where that
    /// ended (Postgres `pg_last_wal_replay_lsn()`, static after promotion;
    /// Redis `second_repl_offset` − 1). Same units as `write_position`.
    pub replayed_position: Option<u64>,
}

/// What one poll of a pair saw of both configured servers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairRoles {
    /// The server at `primary_url`.
    pub primary: SideSeen,
    /// The server at `replica_url`.
    pub replica: SideSeen,
    /// Which way this poll measured (see [`Direction::after`]).
    pub direction: Direction,
    /// Whether the target writes a heartbeat (without one, a promotion's
    /// loss can be predicted but not measured).
    pub heartbeat_configured: bool,
}

impl PairRoles {
    pub fn side(&self, side: ConfiguredSide) -> &SideSeen {
        match side {
            ConfiguredSide::Primary => &self.primary,
            ConfiguredSide::Replica => &self.replica,
        }
    }

    pub fn side_mut(&mut self, side: ConfiguredSide) -> &mut SideSeen {
        match side {
            ConfiguredSide::Primary => &mut self.primary,
            ConfiguredSide::Replica => &mut self.replica,
        }
    }

    /// Both servers accept writes.
    pub fn split_brain(&self) -> bool {
        self.primary.writable == Some(true) && self.replica.writable == Some(true)
    }

    /// The side seen accepting writes while the other is not known to:
    /// where writes (and heartbeats) go now.
    pub fn sole_writer(&self) -> Option<ConfiguredSide> {
        match (self.primary.writable, self.replica.writable) {
            (Some(true), Some(true)) => None,
            (Some(true), _) => Some(ConfiguredSide::Primary),
            (_, Some(true)) => Some(ConfiguredSide::Replica),
            _ => None,
        }
    }
}

impl Direction {
    /// The direction to measure on the next poll, after `roles`: flipped
    /// only when one side accepts writes and the other is seen not to (it
    /// follows, or is being rebuilt to); otherwise unchanged.
    pub fn after(self, roles: &PairRoles) -> Direction {
        match (roles.primary.writable, roles.replica.writable) {
            (Some(true), Some(false)) => Direction::Forward,
            (Some(false), Some(true)) => Direction::Reverse,
            _ => self,
        }
    }

    /// After a poll of a pair kind: heartbeats go where writes are accepted
    /// (`writer`), and the next poll measures the direction replication now
    /// runs in. Returns whether the direction flipped: positions sampled on
    /// the old source then date nothing on the new one, so the caller starts
    /// its position history afresh.
    pub fn follow(&mut self, writer: &WriterSide, roles: &PairRoles) -> bool {
        writer.follow(roles);
        let next = self.after(roles);
        if next == *self {
            return false;
        }
        tracing::info!(
            source = next.source().url_key(),
            replica = next.replica().url_key(),
            "replication now runs the other way; measuring that direction"
        );
        *self = next;
        true
    }
}

/// Where a probe's heartbeat writer writes, shared by the probe (which sees
/// the roles on every poll) and its writer (which runs on its own task).
#[derive(Debug, Clone, Default)]
pub struct WriterSide(Arc<AtomicU8>);

impl WriterSide {
    pub fn get(&self) -> ConfiguredSide {
        match self.0.load(Ordering::Relaxed) {
            1 => ConfiguredSide::Replica,
            _ => ConfiguredSide::Primary,
        }
    }

    /// Follows the side seen alone accepting writes; keeps the last one
    /// while both do (split brain) or neither is known to.
    pub fn follow(&self, roles: &PairRoles) {
        if let Some(side) = roles.sole_writer() {
            self.0.store(side.index() as u8, Ordering::Relaxed);
        }
    }
}

/// Why a promotion's loss could not be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmeasured {
    /// The target writes no heartbeat.
    NoHeartbeat,
    /// The exporter never saw the promoted side as a replica (it was
    /// promoted before this exporter started watching).
    NotWatchedBefore,
    /// The promoted side holds no heartbeat of this exporter.
    NoHeartbeatOnPromotedSide,
    /// No heartbeat write succeeded on the old primary since the exporter
    /// started.
    NoAcknowledgedHeartbeat,
}

impl Unmeasured {
    /// What a person reads, after "loss not measured: ".
    pub fn describe(self) -> &'static str {
        match self {
            Unmeasured::NoHeartbeat => "the target has no heartbeat (add `heartbeat` to measure the next one); only the prediction is known",
            Unmeasured::NotWatchedBefore => "it was already promoted when this exporter first polled it, so there is nothing to compare with",
            Unmeasured::NoHeartbeatOnPromotedSide => "the promoted side holds no heartbeat of this exporter (none had replicated, or it could not be read)",
            Unmeasured::NoAcknowledgedHeartbeat => "no heartbeat write had succeeded on the old primary since this exporter started",
        }
    }
}

/// One promotion: a configured side that was a replica seen accepting writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    /// The side that was promoted (the configured replica, unless this is a
    /// switch back).
    pub side: ConfiguredSide,
    /// The first poll that saw it accepting writes (the promotion happened
    /// at or before this instant).
    pub seen_at: SystemTime,
    /// The last poll that saw it a replica (the promotion happened after);
    /// `None` when this exporter never saw it a replica.
    pub replica_until: Option<SystemTime>,
    /// The exposure predicted by the last poll before: the known loss
    /// window when the source had been lost, else the exposure.
    pub predicted: Option<Duration>,
    /// The last recovery point proven before the promotion.
    pub recovery_point_before: Option<SystemTime>,
    /// The newest heartbeat the old primary acknowledged.
    pub old_primary_heartbeat: Option<SystemTime>,
    /// The newest heartbeat the promoted side held when it was first seen
    /// promoted (replicated before the promotion; this exporter writes
    /// there only afterwards).
    pub promoted_heartbeat: Option<SystemTime>,
    /// `old_primary_heartbeat − promoted_heartbeat`, or why it is unknown.
    pub loss: Result<Duration, Unmeasured>,
    /// Replication-stream bytes the old primary had and the promoted side
    /// never got: the old primary's last position sampled by a poll minus
    /// where the promoted side's replication ended (a lower bound).
    pub lost_bytes: Option<u64>,
    /// When the promoted side first accepted a heartbeat write.
    pub first_heartbeat_accepted: Option<SystemTime>,
}

impl Promotion {
    pub fn measured_loss(&self) -> Option<Duration> {
        self.loss.ok()
    }
}

/// Split brain: both sides seen accepting writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitBrain {
    /// The first poll that saw it.
    pub since: SystemTime,
    /// The last poll that saw both sides accepting writes. The flag stays
    /// while a side cannot be reached: it may still be taking writes.
    pub last_seen: SystemTime,
}

/// What one poll established besides the roles, for the prediction.
#[derive(Debug, Clone, Copy)]
pub struct PollFacts {
    /// When the evidence was taken.
    pub at: SystemTime,
    pub recovery_point: Option<SystemTime>,
    pub exposure: Option<Duration>,
    /// Last contact with the source minus the recovery point, when the
    /// source did not answer this poll.
    pub loss_window_if_source_lost: Option<Duration>,
}

/// A target's pair roles followed over time: kept in its report, updated
/// after every poll and every heartbeat write.
#[derive(Debug, Clone, Default)]
pub struct PromotionWatch {
    /// Whether the target's kind reports roles at all (set by its first
    /// measurement that has them).
    pub followed: bool,
    /// The side that accepts writes, as last established (the configured
    /// primary until a promotion is seen).
    pub writer: ConfiguredSide,
    /// The direction the latest poll measured.
    pub direction: Direction,
    /// Whether the configured replica accepts writes, last known.
    pub replica_writable: Option<bool>,
    /// The last poll that saw the non-writer side not accepting writes.
    other_replica_at: Option<SystemTime>,
    /// The newest heartbeat read on the non-writer side while it was seen a
    /// replica: what it held, at least, when it was promoted. Used when the
    /// poll that first sees the promotion cannot read the heartbeat (a slow
    /// or failed read); it can only make the measured loss larger, never
    /// smaller than the truth.
    other_heartbeat_as_replica: Option<SystemTime>,
    /// Whether a promotion has moved `writer` (until then, the configured
    /// replica accepting writes is a promotion even unseen as a replica).
    writer_moved: bool,
    /// The newest heartbeat each configured side acknowledged.
    acknowledged: [Option<SystemTime>; 2],
    /// The writer's last position sampled by a poll.
    writer_position: Option<u64>,
    /// What the last poll predicted, and proved.
    predicted: Option<Duration>,
    recovery_point: Option<SystemTime>,
    pub split_brain: Option<SplitBrain>,
    /// The latest promotion seen.
    pub latest: Option<Promotion>,
}

impl PromotionWatch {
    /// After one heartbeat write attempt on `side`.
    pub fn after_heartbeat(&mut self, side: ConfiguredSide, at: SystemTime, accepted: bool) {
        if !accepted {
            return;
        }
        let newest = &mut self.acknowledged[side.index()];
        *newest = Some(newest.map_or(at, |t| t.max(at)));
        if let Some(p) = &mut self.latest {
            if p.side == side && p.first_heartbeat_accepted.is_none() && at >= p.seen_at {
                p.first_heartbeat_accepted = Some(at);
            }
        }
    }

    /// The newest heartbeat `side` acknowledged.
    pub fn acknowledged(&self, side: ConfiguredSide) -> Option<SystemTime> {
        self.acknowledged[side.index()]
    }

    /// After one poll that saw `roles` (none: a kind without roles, or a
    /// poll that learned nothing).
    pub fn after_poll(&mut self, roles: Option<&PairRoles>, facts: PollFacts) {
        let Some(roles) = roles else {
            return;
        };
        self.followed = true;
        self.direction = roles.direction;
        if roles.replica.writable.is_some() {
            self.replica_writable = roles.replica.writable;
        }
        let writer = self.writer;
        let other = writer.other();
        let seen = roles.side(other);

        // Split brain is latched while a side cannot be reached: it may
        // still be taking writes. It clears when a poll sees a side refuse.
        if roles.split_brain() {
            let since = self.split_brain.as_ref().map_or(facts.at, |s| s.since);
            self.split_brain = Some(SplitBrain {
                since,
                last_seen: facts.at,
            });
        } else if roles.primary.writable == Some(false) || roles.replica.writable == Some(false) {
            self.split_brain = None;
        }

        let promoted =
            seen.writable == Some(true) && (self.other_replica_at.is_some() || !self.writer_moved);
        if promoted {
            let watched = self.other_replica_at.is_some();
            let old = self.acknowledged(writer);
            let loss = if !roles.heartbeat_configured {
                Err(Unmeasured::NoHeartbeat)
            } else if !watched {
                Err(Unmeasured::NotWatchedBefore)
            } else {
                match (old, seen.heartbeat.or(self.other_heartbeat_as_replica)) {
                    (_, None) => Err(Unmeasured::NoHeartbeatOnPromotedSide),
                    (None, _) => Err(Unmeasured::NoAcknowledgedHeartbeat),
                    (Some(old), Some(promoted)) => {
                        Ok(old.duration_since(promoted).unwrap_or_default())
                    }
                }
            };
            self.latest = Some(Promotion {
                side: other,
                seen_at: facts.at,
                replica_until: self.other_replica_at,
                predicted: if watched { self.predicted } else { None },
                recovery_point_before: self.recovery_point,
                old_primary_heartbeat: old,
                promoted_heartbeat: seen.heartbeat.or(self.other_heartbeat_as_replica),
                loss,
                lost_bytes: match (watched, self.writer_position, seen.replayed_position) {
                    (true, Some(had), Some(got)) => Some(had.saturating_sub(got)),
                    _ => None,
                },
                first_heartbeat_accepted: None,
            });
            // From here on the promoted side is the writer; the old one is
            // watched for writes (split brain) and, rebuilt, as its replica.
            self.writer = other;
            self.writer_moved = true;
            self.other_replica_at = None;
            self.other_heartbeat_as_replica = None;
            self.writer_position = None;
        } else {
            self.complete_unmeasured_loss(roles);
            if seen.writable == Some(false) {
                self.other_replica_at = Some(facts.at);
                if let Some(held) = seen.heartbeat {
                    self.other_heartbeat_as_replica = Some(
                        self.other_heartbeat_as_replica
                            .map_or(held, |before| before.max(held)),
                    );
                }
            }
            if let Some(position) = roles.side(writer).write_position {
                self.writer_position = Some(position);
            }
        }
        self.predicted = facts.loss_window_if_source_lost.or(facts.exposure);
        self.recovery_point = facts.recovery_point;
    }

    /// A promotion first seen by a poll that could not read the promoted
    /// side's heartbeat (a slow or failed read) is measured by a later poll
    /// that can, as long as that heartbeat was written before the promotion
    /// was seen: this exporter writes there only afterwards, so an older
    /// heartbeat is still the newest one replicated from the old primary.
    fn complete_unmeasured_loss(&mut self, roles: &PairRoles) {
        let Some(p) = &mut self.latest else {
            return;
        };
        if p.loss != Err(Unmeasured::NoHeartbeatOnPromotedSide) || p.side != self.writer {
            return;
        }
        let Some(held) = roles.side(p.side).heartbeat.filter(|h| *h < p.seen_at) else {
            return;
        };
        p.promoted_heartbeat = Some(held);
        if let Some(old) = p.old_primary_heartbeat {
            p.loss = Ok(old.duration_since(held).unwrap_or_default());
        }
    }

    /// A promotion was seen and nothing is measured replicating from the
    /// promoted side yet (its old primary is gone, or not rebuilt as its
    /// replica): the pair has no standby.
    pub fn promoted_without_standby(&self) -> bool {
        self.latest.is_some() && self.direction.source() != self.writer
    }

    /// Replication is measured from `replica_url` to `primary_url`.
    pub fn reversed(&self) -> bool {
        self.followed && self.direction == Direction::Reverse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    fn side(writable: Option<bool>, heartbeat: Option<f64>) -> SideSeen {
        SideSeen {
            writable,
            heartbeat: heartbeat.map(at),
            ..SideSeen::default()
        }
    }

    fn roles(primary: SideSeen, replica: SideSeen, direction: Direction) -> PairRoles {
        PairRoles {
            primary,
            replica,
            direction,
            heartbeat_configured: true,
        }
    }

    fn facts(t: f64, rp: f64) -> PollFacts {
        PollFacts {
            at: at(t),
            recovery_point: Some(at(rp)),
            exposure: Some(Duration::from_secs_f64(t - rp)),
            loss_window_if_source_lost: None,
        }
    }

    fn steady(w: &mut PromotionWatch, t: f64) {
        let mut r = roles(
            side(Some(true), None),
            side(Some(false), Some(t)),
            Direction::Forward,
        );
        r.primary.write_position = Some(1000 + t as u64);
        w.after_heartbeat(ConfiguredSide::Primary, at(t), true);
        w.after_poll(Some(&r), facts(t, t));
    }

    #[test]
    fn an_unplanned_promotion_measures_what_the_old_primary_had_and_the_replica_did_not() {
        let mut w = PromotionWatch::default();
        steady(&mut w, 10.0);
        // The replica stops at 10; the primary acknowledges heartbeats until 16.
        for t in 11..=16 {
            w.after_heartbeat(ConfiguredSide::Primary, at(t as f64), true);
            let mut r = roles(side(Some(true), None), side(None, None), Direction::Forward);
            r.primary.write_position = Some(1000 + t);
            w.after_poll(Some(&r), facts(t as f64, 10.0));
        }
        // The primary is lost at 16.5; the exporter knows it last at 16.
        let r = roles(side(None, None), side(None, None), Direction::Forward);
        let mut lost = facts(20.0, 10.0);
        lost.loss_window_if_source_lost = Some(Duration::from_secs(6));
        w.after_poll(Some(&r), lost);
        assert!(w.latest.is_none());
        // The replica comes back (still a replica), then is promoted.
        let mut back = roles(
            side(None, None),
            side(Some(false), Some(10.0)),
            Direction::Forward,
        );
        back.replica.replayed_position = Some(1005);
        w.after_poll(Some(&back), lost);
        let mut promoted = back.clone();
        promoted.replica.writable = Some(true);
        w.after_poll(Some(&promoted), facts(22.0, 10.0));
        let p = w.latest.clone().unwrap();
        assert_eq!(p.side, ConfiguredSide::Replica);
        assert_eq!(p.seen_at, at(22.0));
        assert_eq!(p.replica_until, Some(at(20.0)));
        assert_eq!(p.loss, Ok(Duration::from_secs(6)));
        assert_eq!(p.predicted, Some(Duration::from_secs(6)));
        assert_eq!(p.recovery_point_before, Some(at(10.0)));
        assert_eq!(p.lost_bytes, Some(1016 - 1005));
        assert_eq!(w.writer, ConfiguredSide::Replica);
        assert!(w.promoted_without_standby());
        assert_eq!(w.replica_writable, Some(true));
        assert!(w.split_brain.is_none());
        // The promoted side accepts its first heartbeat.
        w.after_heartbeat(ConfiguredSide::Replica, at(22.5), true);
        assert_eq!(
            w.latest.as_ref().unwrap().first_heartbeat_accepted,
            Some(at(22.5))
        );
        // The next polls do not see a second promotion.
        w.after_poll(Some(&promoted), facts(23.0, 10.0));
        assert_eq!(w.latest.as_ref().unwrap().seen_at, at(22.0));
    }

    #[test]
    fn failback_reverses_the_direction_and_ends_promoted_without_standby() {
        let mut w = PromotionWatch::default();
        steady(&mut w, 10.0);
        let promoted = roles(
            side(None, None),
            side(Some(true), Some(10.0)),
            Direction::Forward,
        );
        w.after_poll(Some(&promoted), facts(12.0, 10.0));
        assert!(w.promoted_without_standby());
        // The old primary is rebuilt as a replica of the promoted side.
        let rebuilt = roles(
            side(Some(false), Some(13.0)),
            side(Some(true), None),
            Direction::Forward,
        );
        assert_eq!(Direction::Forward.after(&rebuilt), Direction::Reverse);
        w.after_poll(Some(&rebuilt), facts(13.0, 13.0));
        let mut reverse = rebuilt.clone();
        reverse.direction = Direction::Reverse;
        w.after_poll(Some(&reverse), facts(14.0, 14.0));
        assert!(!w.promoted_without_standby());
        assert!(w.reversed());
        assert_eq!(
            w.latest.as_ref().unwrap().seen_at,
            at(12.0),
            "one promotion"
        );
        // A switch back is a second promotion, measured the same way.
        w.after_heartbeat(ConfiguredSide::Replica, at(20.0), true);
        let back = roles(
            side(Some(true), Some(19.5)),
            side(None, None),
            Direction::Reverse,
        );
        w.after_poll(Some(&back), facts(21.0, 19.0));
        let p = w.latest.clone().unwrap();
        assert_eq!(p.side, ConfiguredSide::Primary);
        assert_eq!(p.loss, Ok(Duration::from_millis(500)));
        assert_eq!(w.writer, ConfiguredSide::Primary);
    }

    #[test]
    fn split_brain_is_latched_while_a_side_cannot_be_reached() {
        let mut w = PromotionWatch::default();
        steady(&mut w, 10.0);
        let both = roles(
            side(Some(true), None),
            side(Some(true), Some(10.0)),
            Direction::Forward,
        );
        w.after_poll(Some(&both), facts(11.0, 10.0));
        assert_eq!(w.split_brain.as_ref().unwrap().since, at(11.0));
        // It is also a promotion of the replica, measured once.
        assert!(w.latest.as_ref().unwrap().loss.is_ok());
        // The old primary keeps accepting writes: still split brain, and
        // not a "promotion" of the old primary.
        w.after_poll(Some(&both), facts(12.0, 10.0));
        assert_eq!(w.latest.as_ref().unwrap().side, ConfiguredSide::Replica);
        assert_eq!(w.split_brain.as_ref().unwrap().last_seen, at(12.0));
        // The old primary stops answering: it may still take writes.
        let gone = roles(side(None, None), side(Some(true), None), Direction::Forward);
        w.after_poll(Some(&gone), facts(13.0, 10.0));
        assert!(w.split_brain.is_some());
        // Seen read-only (rebuilt as a replica): cleared.
        let fenced = roles(
            side(Some(false), None),
            side(Some(true), None),
            Direction::Forward,
        );
        w.after_poll(Some(&fenced), facts(14.0, 10.0));
        assert!(w.split_brain.is_none());
    }

    #[test]
    fn a_heartbeat_unread_at_promotion_falls_back_to_the_newest_seen_as_a_replica() {
        let mut w = PromotionWatch::default();
        steady(&mut w, 10.0);
        for t in 11..=16 {
            w.after_heartbeat(ConfiguredSide::Primary, at(t as f64), true);
        }
        // The replica, seen after the primary is lost, still a replica
        // holding the heartbeat of 10 s.
        let lost = roles(
            side(None, None),
            side(Some(false), Some(10.0)),
            Direction::Forward,
        );
        w.after_poll(Some(&lost), facts(18.0, 10.0));
        // The poll that sees it promoted cannot read its heartbeat.
        let promoted = roles(side(None, None), side(Some(true), None), Direction::Forward);
        w.after_poll(Some(&promoted), facts(20.0, 10.0));
        let p = w.latest.clone().unwrap();
        assert_eq!(p.measured_loss(), Some(Duration::from_secs(6)));
        assert_eq!(p.promoted_heartbeat, Some(at(10.0)));
    }

    #[test]
    fn a_heartbeat_unread_at_promotion_is_measured_by_the_next_poll_if_it_predates_it() {
        let promote = |w: &mut PromotionWatch| {
            // Watched as a replica, but its heartbeat never read.
            let mut r = roles(
                side(Some(true), None),
                side(Some(false), None),
                Direction::Forward,
            );
            r.primary.write_position = Some(1010);
            w.after_heartbeat(ConfiguredSide::Primary, at(10.0), true);
            w.after_poll(Some(&r), facts(10.0, 10.0));
            for t in 11..=16 {
                w.after_heartbeat(ConfiguredSide::Primary, at(t as f64), true);
            }
            // The first poll to see the promotion cannot read its heartbeat.
            let promoted = roles(side(None, None), side(Some(true), None), Direction::Forward);
            w.after_poll(Some(&promoted), facts(20.0, 10.0));
            assert_eq!(
                w.latest.as_ref().unwrap().loss,
                Err(Unmeasured::NoHeartbeatOnPromotedSide)
            );
        };
        // The next poll reads the heartbeat replicated before the promotion.
        let mut w = PromotionWatch::default();
        promote(&mut w);
        let later = roles(
            side(None, None),
            side(Some(true), Some(10.0)),
            Direction::Forward,
        );
        w.after_poll(Some(&later), facts(21.0, 10.0));
        let p = w.latest.clone().unwrap();
        assert_eq!(p.measured_loss(), Some(Duration::from_secs(6)));
        assert_eq!(p.promoted_heartbeat, Some(at(10.0)));
        // A heartbeat written after the promotion was seen proves nothing
        // about what replicated: the loss stays unmeasured.
        let mut w = PromotionWatch::default();
        promote(&mut w);
        let ours = roles(
            side(None, None),
            side(Some(true), Some(20.5)),
            Direction::Forward,
        );
        w.after_poll(Some(&ours), facts(21.0, 10.0));
        assert_eq!(w.latest.unwrap().measured_loss(), None);
    }

    #[test]
    fn without_a_heartbeat_or_an_earlier_look_the_loss_is_not_measured() {
        // Already promoted when first polled.
        let mut w = PromotionWatch::default();
        let promoted = roles(
            side(None, None),
            side(Some(true), Some(5.0)),
            Direction::Forward,
        );
        w.after_poll(Some(&promoted), facts(10.0, 5.0));
        let p = w.latest.clone().unwrap();
        assert_eq!(p.loss, Err(Unmeasured::NotWatchedBefore));
        assert_eq!(p.predicted, None);
        assert_eq!(p.replica_until, None);

        // No heartbeat configured: predicted, not measured.
        let mut w = PromotionWatch::default();
        let mut normal = roles(
            side(Some(true), None),
            side(Some(false), None),
            Direction::Forward,
        );
        normal.heartbeat_configured = false;
        w.after_poll(Some(&normal), facts(10.0, 9.0));
        let mut promoted = normal.clone();
        promoted.replica.writable = Some(true);
        promoted.primary.writable = None;
        w.after_poll(Some(&promoted), facts(11.0, 9.0));
        let p = w.latest.clone().unwrap();
        assert_eq!(p.loss, Err(Unmeasured::NoHeartbeat));
        assert_eq!(p.predicted, Some(Duration::from_secs(1)));
        assert_eq!(p.measured_loss(), None);
    }

    #[test]
    fn the_writer_follows_the_side_alone_accepting_writes() {
        let writer = WriterSide::default();
        let twin = writer.clone();
        assert_eq!(writer.get(), ConfiguredSide::Primary);
        let promoted = roles(side(None, None), side(Some(true), None), Direction::Forward);
        writer.follow(&promoted);
        assert_eq!(twin.get(), ConfiguredSide::Replica);
        // Split brain keeps the last one.
        writer.follow(&roles(
            side(Some(true), None),
            side(Some(true), None),
            Direction::Forward,
        ));
        assert_eq!(twin.get(), ConfiguredSide::Replica);
        writer.follow(&roles(
            side(Some(true), None),
            side(Some(false), None),
            Direction::Reverse,
        ));
        assert_eq!(twin.get(), ConfiguredSide::Primary);
        // The direction flips only once the other side is seen following.
        assert_eq!(Direction::Reverse.after(&promoted), Direction::Reverse);
        assert_eq!(Direction::Forward.after(&promoted), Direction::Forward);
    }
}
