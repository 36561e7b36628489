//! The exporter's own metrics: state about the exporter rather than about a
//! target, which the store does not hold.
//!
//! What monitoring costs: [`AwsCallCounters`]. The daemon
//! (`run`) and `check` each create one, hand it to the probes they build
//! (through [`crate::probe::ProbeContext`]) and, for the daemon, to the
//! renderer (through `http::AppState`). Nothing reads a static: two
//! exporters in one process (the tests) count apart.
//!
//! Whether the last configuration reload worked: [`ConfigReloadStatus`],
//! owned by the daemon's reloader and read by `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::probe::FailureReason;

/// Counts of AWS calls: every HTTP request the SDK sends (retries included:
/// what AWS bills), every operation that failed after the SDK's retries,
/// every query sent to `GetMetricData` (what CloudWatch bills).
#[derive(Debug, Default)]
pub struct AwsCallCounters {
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    errors: Mutex<BTreeMap<(&'static str, &'static str, FailureReason), u64>>,
    cloudwatch_metrics_requested: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsCallCounts {
    /// (service, operation, HTTP requests sent).
    pub requests: Vec<(String, String, u64)>,
    /// (service, operation, reason, failed operations).
    pub errors: Vec<(String, String, FailureReason, u64)>,
    pub cloudwatch_metrics_requested: u64,
}

impl AwsCallCounts {
    /// Requests of one service and operation (0 when none).
    pub fn requests(&self, service: &str, operation: &str) -> u64 {
        self.requests
            .iter()
            .find(|(s, o, _)| s == service && o == operation)
            .map_or(0, |(_, _, n)| *n)
    }
}

impl AwsCallCounters {
    pub fn count_request(&self, service: &'static str, operation: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((service, operation.to_string()))
            .or_default() += 1;
    }

    pub fn count_error(
        &self,
        service: &'static str,
        operation: &'static str,
        reason: FailureReason,
    ) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry((service, operation, reason)).or_default() += 1;
    }

    pub fn count_metrics_requested(&self, queries: usize) {
        self.cloudwatch_metrics_requested
            .fetch_add(queries as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> AwsCallCounts {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        AwsCallCounts {
            requests: requests
                .iter()
                .map(|((s, o), n)| (s.to_string(), o.clone(), *n))
                .collect(),
            errors: errors
                .iter()
                .map(|((s, o, r), n)| (s.to_string(), o.to_string(), *r, *n))
                .collect(),
            cloudwatch_metrics_requested: self.cloudwatch_metrics_requested.load(Ordering::Relaxed),
        }
    }
}

/// The outcome of the last configuration (re)load, as Prometheus reports
/// its own: the initial load counts as a successful one.
#[derive(Debug)]
pub struct ConfigReloadStatus {
    successful: AtomicBool,
    last_success: Mutex<SystemTime>,
}

impl ConfigReloadStatus {
    /// The status after the configuration was loaded at `at`.
    pub fn loaded_at(at: SystemTime) -> ConfigReloadStatus {
        ConfigReloadStatus {
            successful: AtomicBool::new(true),
            last_success: Mutex::new(at),
        }
    }

    pub fn succeeded(&self, at: SystemTime) {
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = at;
        self.successful.store(true, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.successful.store(false, Ordering::Relaxed);
    }

    /// Whether the last reload worked.
    pub fn successful(&self) -> bool {
        self.successful.load(Ordering::Relaxed)
    }

    /// When a (re)load last worked.
    pub fn last_success(&self) -> SystemTime {
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_counters_count_apart() {
        let (a, b) = (AwsCallCounters::default(), AwsCallCounters::default());
        a.count_request("sqs", "GetQueueAttributes");
        a.count_request("sqs", "GetQueueAttributes");
        b.count_metrics_requested(3);
        a.count_error("sqs", "GetQueueUrl", FailureReason::AwsApi);
        let (a, b) = (a.snapshot(), b.snapshot());
        assert_eq!(a.requests("sqs", "GetQueueAttributes"), 2);
        assert_eq!(a.cloudwatch_metrics_requested, 0);
        assert_eq!(a.errors.len(), 1);
        assert_eq!(b.requests("sqs", "GetQueueAttributes"), 0);
        assert_eq!(b.cloudwatch_metrics_requested, 3);
    }
}
