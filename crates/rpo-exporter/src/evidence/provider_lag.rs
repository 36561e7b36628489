//! Provider-reported lag (SPEC section 2, evidence 3): a CloudWatch
//! datapoint at time T reporting a lag of L seconds proves a recovery point
//! of T − L. The datapoint's own time is the evidence time, so CloudWatch's
//! delay shows up as staleness, honestly.

use std::time::{Duration, SystemTime};

/// What one replica's reported lag proves. A negative lag (RDS reports -1
/// while replication is not running) or a non-number proves nothing.
pub fn recovery_point(datapoint_time: SystemTime, lag_seconds: f64) -> Option<SystemTime> {
    if !lag_seconds.is_finite() || lag_seconds < 0.0 {
        return None;
    }
    datapoint_time.checked_sub(Duration::from_secs_f64(lag_seconds))
}

/// Combines per-replica proofs `(recovery point, evidence time)`: the
/// target's recovery point is the oldest replica's, its evidence time the
/// oldest datapoint's. Any replica without a proof leaves the target
/// without one.
pub fn combine_replicas(
    proofs: impl IntoIterator<Item = (Option<SystemTime>, SystemTime)>,
) -> (Option<SystemTime>, Option<SystemTime>) {
    let mut recovery_point: Option<Option<SystemTime>> = None;
    let mut evidence: Option<SystemTime> = None;
    for (rp, evidence_time) in proofs {
        recovery_point = Some(match (recovery_point, rp) {
            (None, rp) => rp,
            (Some(Some(a)), Some(b)) => Some(a.min(b)),
            _ => None,
        });
        evidence = Some(evidence.map_or(evidence_time, |e| e.min(evidence_time)));
    }
    (recovery_point.flatten(), evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn lag_proofs() {
        assert_eq!(recovery_point(at(100), 7.0), Some(at(93)));
        assert_eq!(recovery_point(at(100), -1.0), None);
        assert_eq!(recovery_point(at(100), f64::NAN), None);
        let (rp, ev) = combine_replicas([(Some(at(93)), at(100)), (Some(at(80)), at(90))]);
        assert_eq!((rp, ev), (Some(at(80)), Some(at(90))));
        let (rp, _) = combine_replicas([(Some(at(93)), at(100)), (None, at(90))]);
        assert_eq!(rp, None);
    }
}
