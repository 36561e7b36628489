//! The AWS plumbing every AWS kind shares, in one place: SDK clients, the
//! CloudWatch batcher, the call counters and error classification. One file
//! per kind sits beside it (`rds`, `aurora_global`, `elasticache_global`,
//! `s3`, `efs`, `sqs`).
//!
//! **Clients.** [`clients_for`] hands out one [`AwsClients`] per
//! [`AwsAccess`] (region, profile, role, endpoint), tokio runtime and set of
//! call counters; every target with that access shares it, and with it one
//! SDK client per service.
//! The SDK config comes from `aws-config`'s standard chain (environment,
//! shared files with `profile`, SSO, container and instance roles), with
//! `role_arn` assumed on top through STS. The HTTPS client is hyper on rustls
//! with `ring`. Retries are the SDK's standard mode (3 attempts, exponential
//! backoff with jitter, throttling errors included); `AWS_MAX_ATTEMPTS` and
//! `AWS_RETRY_MODE` (or the profile's `max_attempts`) change it, and the
//! tests set `AWS_MAX_ATTEMPTS=1`. The registry keeps weak references, so
//! clients die with the last probe using them, and is keyed by runtime too,
//! because a pooled connection must not outlive the runtime that opened it.
//!
//! **CloudWatch.** Probes never call CloudWatch themselves: they hand their
//! queries to [`AwsClients::newest_datapoints`]. The first request of a
//! region opens a short collection window ([`BATCH_WINDOW`]); every request
//! from any target of that access arriving within it joins the same batch,
//! which one spawned task sends as `GetMetricData` calls of up to 500
//! distinct queries (identical queries of two targets are sent once). A batch
//! that reaches 500 queries is sent at once. Targets of one region with the
//! same poll interval tick together (the poller starts them together), so in
//! steady state they cost `ceil(series / 500)` calls per cycle. The call runs
//! in its own task, bounded by the longest timeout among its requesters:
//! each waiting probe keeps its own timeout, and a hung call never delays
//! anything but the AWS targets waiting on it (each target is its own task).
//! The window reaches back twice `stale_after` plus two periods, with one-minute
//! periods aligned to the minute, so the newest datapoint is always in it,
//! and a series with no datapoint in it would be stale anyway. The
//! datapoint's own timestamp (the start of its minute: the conservative end)
//! becomes the evidence time.
//!
//! **Counting.** Every HTTP request the SDK sends (each retry too: that is
//! what AWS bills) is counted by an interceptor in
//! `rpo_aws_api_requests_total{service,operation}`; every operation that
//! fails after the SDK's retries in `rpo_aws_api_errors_total{service,
//! operation,reason}`; every query sent to `GetMetricData` in
//! `rpo_cloudwatch_metrics_requested_total`. The counters
//! ([`AwsCallCounters`], in `self_metrics`) belong to whoever built the
//! probes (the daemon, a `check` run) and reach the clients through
//! [`crate::probe::ProbeContext`]; the daemon hands the same object to the
//! renderer, so data still flows one way and no one reads a static here.

pub mod aurora_global;
pub mod config;
pub mod efs;
pub mod elasticache_global;
pub mod rds;
pub mod s3;
pub mod sqs;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudwatch::types::{
    Dimension, MessageData, Metric, MetricDataQuery, MetricStat, ScanBy, StatusCode,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::sync::{oneshot, Notify};

use crate::probe::{FailureReason, ProbeError};
use crate::self_metrics::AwsCallCounters;
pub use config::AwsAccess;

/// CloudWatch's period for AWS metrics: one minute.
pub const PERIOD: Duration = Duration::from_secs(60);
/// How long the first CloudWatch request of a region waits for others to
/// join its batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(750);
/// `GetMetricData` takes at most 500 queries and returns at most 100,800
/// datapoints per call.
pub const MAX_QUERIES_PER_CALL: usize = 500;
const MAX_DATAPOINTS_PER_CALL: usize = 100_800;

// ---------------------------------------------------------------------------
// Call counting.

/// Counts every HTTP request an SDK client sends, retries included.
#[derive(Debug)]
struct CountingInterceptor {
    service: &'static str,
    counters: Arc<AwsCallCounters>,
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "rpo-exporter request counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        self.counters.count_request(self.service, operation);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// The counters' address: clients are shared only among probes counting in
/// the same counters. Unambiguous while the entry's clients live, because
/// they hold the counters.
type CountersId = usize;
type RegistryKey = (Option<tokio::runtime::Id>, CountersId, AwsAccess);

/// The shared clients of one access, created on first use, counting in
/// `counters` (the probe's [`crate::probe::ProbeContext::aws_calls`]).
pub fn clients_for(access: &AwsAccess, counters: &Arc<AwsCallCounters>) -> Arc<AwsClients> {
    static REGISTRY: OnceLock<Mutex<HashMap<RegistryKey, Weak<AwsClients>>>> = OnceLock::new();
    let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
    let key = (runtime, Arc::as_ptr(counters) as CountersId, access.clone());
    let mut registry = REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(clients) = registry.get(&key).and_then(Weak::upgrade) {
        return clients;
    }
    registry.retain(|_, clients| clients.strong_count() > 0);
    let clients = Arc::new(AwsClients::new(access.clone(), counters.clone()));
    registry.insert(key, Arc::downgrade(&clients));
    clients
}

/// The SDK clients of one access (region, profile, role, endpoint), each
/// created on first use and then reused, and that access's CloudWatch batcher.
pub struct AwsClients {
    access: AwsAccess,
    counters: Arc<AwsCallCounters>,
    sdk_config: tokio::sync::OnceCell<SdkConfig>,
    cloudwatch: OnceLock<aws_sdk_cloudwatch::Client>,
    rds: OnceLock<aws_sdk_rds::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    efs: OnceLock<aws_sdk_efs::Client>,
    elasticache: OnceLock<aws_sdk_elasticache::Client>,
    batch: Mutex<PendingBatch>,
    batch_full: Notify,
    get_metric_data_calls: AtomicU64,
}

impl std::fmt::Debug for AwsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClients")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl AwsClients {
    /// Clients of their own, counting in `counters` (tests use a fresh set;
    /// the exporter uses [`clients_for`]).
    pub fn new(access: AwsAccess, counters: Arc<AwsCallCounters>) -> AwsClients {
        AwsClients {
            access,
            counters,
            sdk_config: tokio::sync::OnceCell::new(),
            cloudwatch: OnceLock::new(),
            rds: OnceLock::new(),
            s3: OnceLock::new(),
            sqs: OnceLock::new(),
            efs: OnceLock::new(),
            elasticache: OnceLock::new(),
            batch: Mutex::new(PendingBatch::default()),
            batch_full: Notify::new(),
            get_metric_data_calls: AtomicU64::new(0),
        }
    }

    pub fn access(&self) -> &AwsAccess {
        &self.access
    }

    pub fn counters(&self) -> &AwsCallCounters {
        &self.counters
    }

    /// The shared clients of this access in another region, counting in the
    /// same counters (a replica or secondary discovered at poll time).
    pub fn in_region(&self, region: &str) -> Arc<AwsClients> {
        clients_for(&self.access.in_region(region), &self.counters)
    }

    /// `GetMetricData` calls this access's batcher has sent.
    pub fn get_metric_data_calls(&self) -> u64 {
        self.get_metric_data_calls.load(Ordering::Relaxed)
    }

    /// The SDK config of this access (region, credential chain, profile,
    /// role), loaded once; the `opensearch` kind signs with its credentials.
    pub async fn sdk_config(&self) -> &SdkConfig {
        self.sdk_config
            .get_or_init(|| load_sdk_config(&self.access))
            .await
    }

    pub async fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        let config = self.sdk_config().await;
        self.cloudwatch
            .get_or_init(|| {
                let conf = aws_sdk_cloudwatch::config::Builder::from(config)
                    .interceptor(self.interceptor("cloudwatch"))
                    .build();
                aws_sdk_cloudwatch::Client::from_conf(conf)
            })
            .clone()
    }

    pub async fn rds(&self) -> aws_sdk_rds::Client {
        let config = self.sdk_config().await;
        self.rds
            .get_or_init(|| {
                let conf = aws_sdk_rds::config::Builder::from(config)
                    .interceptor(self.interceptor("rds"))
                    .build();
                aws_sdk_rds::Client::from_conf(conf)
            })
            .clone()
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = self.sdk_config().await;
        self.s3
            .get_or_init(|| {
                let conf = aws_sdk_s3::config::Builder::from(config)
                    .interceptor(self.interceptor("s3"))
                    // Emulators answer on one host: bucket names go in the path.
                    .force_path_style(self.access.endpoint_url.is_some())
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            })
            .clone()
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        let config = self.sdk_config().await;
        self.sqs
            .get_or_init(|| {
                let conf = aws_sdk_sqs::config::Builder::from(config)
                    .interceptor(self.interceptor("sqs"))
                    .build();
                aws_sdk_sqs::Client::from_conf(conf)
            })
            .clone()
    }

    pub async fn efs(&self) -> aws_sdk_efs::Client {
        let config = self.sdk_config().await;
        self.efs
            .get_or_init(|| {
                let conf = aws_sdk_efs::config::Builder::from(config)
                    .interceptor(self.interceptor("efs"))
                    .build();
                aws_sdk_efs::Client::from_conf(conf)
            })
            .clone()
    }

    pub async fn elasticache(&self) -> aws_sdk_elasticache::Client {
        let config = self.sdk_config().await;
        self.elasticache
            .get_or_init(|| {
                let conf = aws_sdk_elasticache::config::Builder::from(config)
                    .interceptor(self.interceptor("elasticache"))
                    .build();
                aws_sdk_elasticache::Client::from_conf(conf)
            })
            .clone()
    }

    fn interceptor(&self, service: &'static str) -> CountingInterceptor {
        CountingInterceptor {
            service,
            counters: self.counters.clone(),
        }
    }

    /// Runs one SDK operation within `timeout`, counting and classifying its
    /// failure.
    pub async fn call<T, E, R>(
        &self,
        service: &'static str,
        operation: &'static str,
        timeout: Duration,
        request: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, ProbeError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: Debug,
    {
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => Err(self.failure(service, operation, timeout, Some(&err))),
            Err(_) => Err(self.failure::<E, R>(service, operation, timeout, None)),
        }
    }

    /// Counts and words a failed operation (`None`: it timed out).
    fn failure<E, R>(
        &self,
        service: &'static str,
        operation: &'static str,
        timeout: Duration,
        err: Option<&SdkError<E, R>>,
    ) -> ProbeError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: Debug,
    {
        let error = match err {
            Some(err) => {
                let (reason, message) = classify(err);
                ProbeError::new(
                    reason,
                    format!("{service} {operation} in {}: {message}", self.access.region),
                )
            }
            None => ProbeError::new(
                FailureReason::Timeout,
                format!(
                    "{service} {operation} in {}: no answer within {}",
                    self.access.region,
                    crate::human::human_duration(timeout)
                ),
            ),
        };
        self.counters.count_error(service, operation, error.reason);
        error
    }

    /// Like [`AwsClients::call`], but an error whose code is in `absent`
    /// (`NoSuchKey`, `ReplicationConfigurationNotFoundError`, ...) is an
    /// answer, `Ok(None)`, not a failure.
    pub async fn call_or_absent<T, E, R>(
        &self,
        service: &'static str,
        operation: &'static str,
        timeout: Duration,
        absent: &[&str],
        request: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<Option<T>, ProbeError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: Debug,
    {
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(output)) => Ok(Some(output)),
            Ok(Err(err)) if err.code().is_some_and(|code| absent.contains(&code)) => Ok(None),
            Ok(Err(err)) => Err(self.failure(service, operation, timeout, Some(&err))),
            Err(_) => Err(self.failure::<E, R>(service, operation, timeout, None)),
        }
    }

    /// The newest datapoint of each query (in order; `None` where the
    /// series has none in the window), fetched in this access's shared batch.
    /// `lookback` is how far back to look (the target's `stale_after` plus a
    /// margin), `timeout` this request's bound.
    pub async fn newest_datapoints(
        self: &Arc<Self>,
        queries: Vec<MetricQuery>,
        lookback: Duration,
        timeout: Duration,
    ) -> Result<Vec<Option<Datapoint>>, ProbeError> {
        let series = self.datapoints(queries, lookback, timeout).await?;
        Ok(series.iter().map(|s| newest(s)).collect())
    }

    /// Every datapoint of each query in the window (in order, oldest
    /// first), fetched in this access's shared batch: for a statistic read
    /// over several minutes (S3's `OperationsFailedReplication`, summed
    /// over [`s3::FAILED_OPERATIONS_WINDOW`]).
    pub async fn datapoints(
        self: &Arc<Self>,
        queries: Vec<MetricQuery>,
        lookback: Duration,
        timeout: Duration,
    ) -> Result<Vec<Series>, ProbeError> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.cloudwatch().await;
        let (reply, answer) = oneshot::channel();
        let (start_flush, full) = {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.queries += queries.len();
            batch.requests.push(BatchRequest {
                queries,
                lookback,
                timeout,
                reply,
            });
            let start = !batch.flush_scheduled;
            batch.flush_scheduled = true;
            (start, batch.queries >= MAX_QUERIES_PER_CALL)
        };
        if start_flush {
            let clients = self.clone();
            tokio::spawn(async move { clients.flush_batch(client).await });
        }
        if full {
            self.batch_full.notify_one();
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProbeError::new(
                FailureReason::AwsApi,
                "the CloudWatch batch ended without an answer",
            )),
            Err(_) => Err(ProbeError::new(
                FailureReason::Timeout,
                format!(
                    "cloudwatch GetMetricData in {}: no answer within {}",
                    self.access.region,
                    crate::human::human_duration(timeout)
                ),
            )),
        }
    }

    async fn flush_batch(self: Arc<Self>, client: aws_sdk_cloudwatch::Client) {
        tokio::select! {
            _ = tokio::time::sleep(BATCH_WINDOW) => {}
            _ = self.batch_full.notified() => {}
        }
        let requests = {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.flush_scheduled = false;
            batch.queries = 0;
            std::mem::take(&mut batch.requests)
        };
        if requests.is_empty() {
            return;
        }
        let plan = BatchPlan::new(&requests, SystemTime::now());
        let timeout = requests
            .iter()
            .map(|r| r.timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        let calls = plan.chunks().map(|range| {
            let client = client.clone();
            let plan = &plan;
            let this = &self;
            async move {
                let result = this
                    .get_metric_data(&client, plan, range.clone(), timeout)
                    .await;
                (range, result)
            }
        });
        let mut results: Vec<Option<Result<Series, ProbeError>>> = vec![None; plan.unique.len()];
        for (range, result) in futures::future::join_all(calls).await {
            match result {
                Ok(series) => {
                    for (i, points) in range.zip(series) {
                        results[i] = Some(points);
                    }
                }
                Err(err) => {
                    for i in range {
                        results[i] = Some(Err(err.clone()));
                    }
                }
            }
        }
        for (request, indices) in requests.into_iter().zip(plan.members) {
            let answer: Result<Vec<Series>, ProbeError> = indices
                .iter()
                .map(|&i| results[i].clone().unwrap_or(Ok(Vec::new())))
                .collect();
            let _ = request.reply.send(answer);
        }
    }

    /// One chunk of the plan: `GetMetricData` (following `NextToken`),
    /// every datapoint per query, oldest first.
    async fn get_metric_data(
        &self,
        client: &aws_sdk_cloudwatch::Client,
        plan: &BatchPlan,
        range: std::ops::Range<usize>,
        timeout: Duration,
    ) -> Result<Vec<Result<Series, ProbeError>>, ProbeError> {
        let queries: Vec<MetricDataQuery> = plan.unique[range.clone()]
            .iter()
            .enumerate()
            .map(|(i, q)| q.to_sdk(&format!("q{i}")))
            .collect();
        let mut series: Vec<Series> = vec![Vec::new(); queries.len()];
        // Each series' status on the newest page that mentioned it: a
        // `Forbidden` or `InternalError` series is a failure of the targets
        // that asked for it, never "no datapoint"; `PartialData` means more
        // pages follow, so only the last page's status counts.
        let mut status: Vec<Option<ProbeError>> = vec![None; queries.len()];
        let mut next_token: Option<String> = None;
        loop {
            self.get_metric_data_calls.fetch_add(1, Ordering::Relaxed);
            self.counters.count_metrics_requested(queries.len());
            let request = client
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(plan.start.into())
                .end_time(plan.end.into())
                .scan_by(ScanBy::TimestampDescending)
                .set_next_token(next_token.take())
                .send();
            let output = self
                .call("cloudwatch", "GetMetricData", timeout, request)
                .await?;
            for result in output.metric_data_results() {
                let Some(index) = result
                    .id()
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|i| *i < series.len())
                else {
                    continue;
                };
                series[index].extend(points_of(result.timestamps(), result.values()));
                status[index] = series_failure(
                    &plan.unique[range.start + index],
                    result.status_code(),
                    result.messages(),
                    &self.access.region,
                );
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => {
                    return Ok(series
                        .into_iter()
                        .zip(status)
                        .map(|(mut points, failure)| match failure {
                            Some(err) => Err(err),
                            None => {
                                points.sort_by_key(|d| d.time);
                                points.dedup_by_key(|d| d.time);
                                Ok(points)
                            }
                        })
                        .collect());
                }
            }
        }
    }
}

/// What one `MetricDataResult`'s `StatusCode` says about its series, on the
/// last page of the answer (CloudWatch API reference, "MetricDataResult":
/// `Complete`, `InternalError`, `PartialData`, `Forbidden`). `Forbidden` is
/// a permission this exporter lacks for that series (`auth`);
/// `InternalError` is CloudWatch failing that series (`aws_api`); a
/// `PartialData` still on the last page (no `NextToken` left to follow) is
/// an incomplete series (`aws_api`). None of them is "no datapoint": the
/// newest datapoint may be among those not returned.
pub fn series_failure(
    query: &MetricQuery,
    status: Option<&StatusCode>,
    messages: &[MessageData],
    region: &str,
) -> Option<ProbeError> {
    let (reason, what) = match status {
        None | Some(StatusCode::Complete) => return None,
        Some(StatusCode::Forbidden) => {
            (FailureReason::Auth, "Forbidden (not permitted to read it)")
        }
        Some(StatusCode::InternalError) => (FailureReason::AwsApi, "InternalError"),
        Some(StatusCode::PartialData) => (
            FailureReason::AwsApi,
            "PartialData on the last page (the series is incomplete)",
        ),
        Some(other) => (FailureReason::AwsApi, other.as_str()),
    };
    let dimensions: Vec<String> = query
        .dimensions
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let said: Vec<String> = messages
        .iter()
        .map(|m| match (m.code(), m.value()) {
            (Some(code), Some(value)) => format!("{code}: {value}"),
            (Some(text), None) | (None, Some(text)) => text.to_string(),
            (None, None) => String::new(),
        })
        .filter(|m| !m.is_empty())
        .collect();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!("; AWS says: {}", said.join("; "))
    };
    Some(ProbeError::new(
        reason,
        format!(
            "cloudwatch GetMetricData in {region}: {}/{} ({}) {what}{said}",
            query.namespace,
            query.metric,
            dimensions.join(", ")
        ),
    ))
}

/// The (timestamp, value) pairs of one `MetricDataResult` that are numbers.
fn points_of<'a>(
    timestamps: &'a [aws_smithy_types::DateTime],
    values: &'a [f64],
) -> impl Iterator<Item = Datapoint> + 'a {
    timestamps.iter().zip(values).filter_map(|(t, v)| {
        let time = SystemTime::try_from(*t).ok()?;
        v.is_finite().then_some(Datapoint { time, value: *v })
    })
}

/// The newest datapoint of a series.
pub fn newest(series: &[Datapoint]) -> Option<Datapoint> {
    series.iter().copied().max_by_key(|d| d.time)
}

/// The sum of a series' values whose minute starts at or after `since`: for
/// a count CloudWatch publishes only when something happened, "none in the
/// window" is 0.
pub fn sum_since(series: &[Datapoint], since: SystemTime) -> f64 {
    series
        .iter()
        .filter(|d| d.time >= since)
        .map(|d| d.value)
        .sum()
}

async fn load_sdk_config(access: &AwsAccess) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(access.region.clone()))
        .http_client(http_client);
    if let Some(profile) = &access.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = &access.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let base = loader.load().await;
    match &access.role_arn {
        None => base,
        Some(role) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("rpo-exporter")
                .configure(&base)
                .build()
                .await;
            base.into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
    }
}

/// Error codes AWS uses for "slow down".
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
];

/// Error codes AWS uses for missing or refused credentials.
const AUTH_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "AuthorizationError",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
];

/// Sorts an SDK error into the bounded reasons, with a message a person can
/// act on. The messages carry AWS's error code and text, never credentials.
pub fn classify<E, R>(err: &SdkError<E, R>) -> (FailureReason, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug,
{
    let chain = crate::drivers::error_chain(err);
    let mentions_credentials = chain.contains("credential") || chain.contains("identity");
    match err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or("unknown error");
            let text = err.message().unwrap_or("").trim();
            let said = if text.is_empty() {
                code.to_string()
            } else {
                format!("{code}: {text}")
            };
            if THROTTLING_CODES.contains(&code) {
                (
                    FailureReason::AwsApi,
                    format!("throttled by AWS after the SDK's retries with backoff ({said}); poll less often or raise the API quota"),
                )
            } else if AUTH_CODES.contains(&code) {
                (
                    FailureReason::Auth,
                    format!("{said}; check the credentials and the IAM policy (deploy/iam/rpo-exporter-policy.json)"),
                )
            } else {
                (FailureReason::AwsApi, said)
            }
        }
        SdkError::TimeoutError(_) => (FailureReason::Timeout, "the SDK's timeout elapsed".to_string()),
        SdkError::DispatchFailure(failure) => {
            if failure.is_timeout() {
                (FailureReason::Timeout, format!("no answer in time ({chain})"))
            } else if mentions_credentials && !failure.is_io() {
                (
                    FailureReason::Auth,
                    format!("no usable AWS credentials ({chain}); set a profile, role or the standard environment variables"),
                )
            } else {
                (FailureReason::Connect, format!("cannot reach the endpoint ({chain})"))
            }
        }
        SdkError::ResponseError(_) => (
            FailureReason::Parse,
            format!("the response could not be read ({chain})"),
        ),
        _ if mentions_credentials => (
            FailureReason::Auth,
            format!("no usable AWS credentials ({chain}); set a profile, role or the standard environment variables"),
        ),
        _ => (FailureReason::Config, format!("the request could not be built ({chain})")),
    }
}

// ---------------------------------------------------------------------------
// CloudWatch queries and the batch.

/// The statistic asked of a series. Lags and ages use `Maximum`: the worst
/// value of the minute, so the recovery point is never optimistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stat {
    Maximum,
    Sum,
}

impl Stat {
    fn as_str(self) -> &'static str {
        match self {
            Stat::Maximum => "Maximum",
            Stat::Sum => "Sum",
        }
    }
}

/// One CloudWatch series at one-minute resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricQuery {
    pub namespace: &'static str,
    pub metric: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub stat: Stat,
}

impl MetricQuery {
    pub fn new(namespace: &'static str, metric: &'static str, stat: Stat) -> MetricQuery {
        MetricQuery {
            namespace,
            metric,
            dimensions: Vec::new(),
            stat,
        }
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> MetricQuery {
        self.dimensions.push((name, value.into()));
        self
    }

    fn to_sdk(&self, id: &str) -> MetricDataQuery {
        let mut metric = Metric::builder()
            .namespace(self.namespace)
            .metric_name(self.metric);
        for (name, value) in &self.dimensions {
            metric = metric.dimensions(Dimension::builder().name(*name).value(value).build());
        }
        MetricDataQuery::builder()
            .id(id)
            .return_data(true)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric.build())
                    .period(PERIOD.as_secs() as i32)
                    .stat(self.stat.as_str())
                    .build(),
            )
            .build()
    }
}

/// One datapoint: the start of its minute and the statistic's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datapoint {
    pub time: SystemTime,
    pub value: f64,
}

/// Every datapoint of one series in the window, oldest first.
pub type Series = Vec<Datapoint>;

/// How far back a target looks: twice its `stale_after` and two periods
/// more, so a datapoint that is merely stale is still found (and shown
/// stale, with its age), and one not found would be stale anyway.
pub fn lookback(stale_after: Duration) -> Duration {
    2 * stale_after + 2 * PERIOD
}

#[derive(Default)]
struct PendingBatch {
    requests: Vec<BatchRequest>,
    queries: usize,
    flush_scheduled: bool,
}

struct BatchRequest {
    queries: Vec<MetricQuery>,
    lookback: Duration,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<Series>, ProbeError>>,
}

/// What one batch sends: the distinct queries, which of them each request
/// asked for, and the common window.
#[derive(Debug)]
pub struct BatchPlan {
    pub unique: Vec<MetricQuery>,
    pub members: Vec<Vec<usize>>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub queries_per_call: usize,
}

impl BatchPlan {
    fn new(requests: &[BatchRequest], now: SystemTime) -> BatchPlan {
        let lookback = requests.iter().map(|r| r.lookback).max().unwrap_or(PERIOD);
        BatchPlan::of(requests.iter().map(|r| r.queries.as_slice()), lookback, now)
    }

    /// Plans the queries of several requests over one window reaching
    /// `lookback` behind `now`.
    pub fn of<'a>(
        requests: impl Iterator<Item = &'a [MetricQuery]>,
        lookback: Duration,
        now: SystemTime,
    ) -> BatchPlan {
        let mut unique: Vec<MetricQuery> = Vec::new();
        let mut index: HashMap<MetricQuery, usize> = HashMap::new();
        let members = requests
            .map(|queries| {
                queries
                    .iter()
                    .map(|q| {
                        *index.entry(q.clone()).or_insert_with(|| {
                            unique.push(q.clone());
                            unique.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        // Minute-aligned, so the buckets are CloudWatch's minutes; the end
        // is the next minute boundary, so the current minute is included.
        let start = align_down(now.checked_sub(lookback).unwrap_or(SystemTime::UNIX_EPOCH));
        let end = align_down(now) + PERIOD;
        let points = ((end.duration_since(start).unwrap_or_default().as_secs() / PERIOD.as_secs())
            as usize)
            .max(1);
        let queries_per_call = (MAX_DATAPOINTS_PER_CALL / points).clamp(1, MAX_QUERIES_PER_CALL);
        BatchPlan {
            unique,
            members,
            start,
            end,
            queries_per_call,
        }
    }

    /// The index ranges of `unique` sent in one call each.
    pub fn chunks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.unique.len())
            .step_by(self.queries_per_call)
            .map(|from| from..(from + self.queries_per_call).min(self.unique.len()))
    }
}

/// When a poll's AWS calls must be done: nine tenths into the target's
/// timeout, so that a call to a region that does not answer ends with the
/// probe's own error (naming the region and the side) and the other side's
/// answers are kept, before the poller's outer bound cancels the poll.
pub fn poll_deadline(timeout: Duration) -> std::time::Instant {
    std::time::Instant::now() + timeout.mul_f64(0.9)
}

/// What is left of a poll's time before `deadline`.
pub fn remaining(deadline: std::time::Instant) -> Duration {
    deadline.saturating_duration_since(std::time::Instant::now())
}

fn align_down(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs - secs % PERIOD.as_secs())
}

/// The region of an ARN, or `default` for a plain identifier.
pub fn region_of<'a>(id_or_arn: &'a str, default: &'a str) -> &'a str {
    config::parse_arn(id_or_arn).map_or(default, |arn| arn.region)
}

/// The last `:`-separated part of an ARN (the identifier), or the text itself.
pub fn identifier_of(id_or_arn: &str) -> &str {
    if id_or_arn.starts_with("arn:") {
        id_or_arn.rsplit([':', '/']).next().unwrap_or(id_or_arn)
    } else {
        id_or_arn
    }
}

/// Milliseconds as CloudWatch reports them, in seconds (Aurora's lags).
pub fn millis_to_seconds(ms: f64) -> f64 {
    ms / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn series(n: usize) -> Vec<MetricQuery> {
        (0..n)
            .map(|i| {
                MetricQuery::new("AWS/RDS", "ReplicaLag", Stat::Maximum)
                    .dimension("DBInstanceIdentifier", format!("db-{i}"))
            })
            .collect()
    }

    #[test]
    fn batch_plan_dedups_and_chunks_by_500() {
        let a = series(700);
        let b = series(1001);
        let plan = BatchPlan::of(
            [a.as_slice(), b.as_slice()].into_iter(),
            Duration::from_secs(17 * 60),
            at(30),
        );
        assert_eq!(plan.unique.len(), 1001);
        assert_eq!(plan.members[0][699], 699);
        assert_eq!(plan.chunks().count(), 3);
        assert_eq!(
            plan.chunks().map(|r| r.len()).collect::<Vec<_>>(),
            vec![500, 500, 1]
        );
    }

    #[test]
    fn batch_window_is_minute_aligned_and_includes_the_current_minute() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 17);
        let plan = BatchPlan::of(
            [series(1).as_slice()].into_iter(),
            Duration::from_secs(600),
            now,
        );
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(plan.start) % 60, 0);
        assert_eq!(secs(plan.end) % 60, 0);
        assert!(plan.end > now && plan.start <= now - Duration::from_secs(600));
    }

    #[test]
    fn a_long_window_keeps_calls_under_the_datapoint_limit() {
        let plan = BatchPlan::of(
            [series(500).as_slice()].into_iter(),
            Duration::from_secs(86_400),
            at(0),
        );
        assert!(plan.queries_per_call * 1442 <= MAX_DATAPOINTS_PER_CALL);
        assert!(plan.chunks().count() > 1);
    }

    #[test]
    fn a_series_gives_its_newest_point_and_a_windowed_sum() {
        let series = vec![
            Datapoint {
                time: at(0),
                value: 100.0,
            },
            Datapoint {
                time: at(600),
                value: 3.0,
            },
            Datapoint {
                time: at(660),
                value: 2.0,
            },
        ];
        assert_eq!(newest(&series).map(|d| d.value), Some(2.0));
        assert_eq!(sum_since(&series, at(600)), 5.0);
        // Nothing published in the window: nothing happened.
        assert_eq!(sum_since(&series, at(700)), 0.0);
        assert_eq!(newest(&[]), None);
    }

    #[test]
    fn a_forbidden_or_failed_series_is_a_failure_naming_the_metric() {
        let q = MetricQuery::new("AWS/RDS", "ReplicaLag", Stat::Maximum)
            .dimension("DBInstanceIdentifier", "erp-replica");
        assert!(series_failure(&q, Some(&StatusCode::Complete), &[], "eu-west-1").is_none());
        assert!(series_failure(&q, None, &[], "eu-west-1").is_none());
        let said = [MessageData::builder()
            .code("Forbidden")
            .value("not authorized to perform cloudwatch:GetMetricData on AWS/RDS")
            .build()];
        let err = series_failure(&q, Some(&StatusCode::Forbidden), &said, "eu-west-1").unwrap();
        assert_eq!(err.reason, FailureReason::Auth);
        assert!(
            err.message
                .contains("AWS/RDS/ReplicaLag (DBInstanceIdentifier=erp-replica)")
                && err.message.contains("not authorized to perform")
                && err.message.contains("eu-west-1"),
            "{}",
            err.message
        );
        for status in [StatusCode::InternalError, StatusCode::PartialData] {
            let err = series_failure(&q, Some(&status), &[], "eu-west-1").unwrap();
            assert_eq!(err.reason, FailureReason::AwsApi, "{status:?}");
        }
    }

    #[test]
    fn sdk_errors_are_told_in_words_never_as_debug_structs() {
        use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let err: SdkError<GetMetricDataError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let (reason, message) = classify(&err);
        assert_eq!(reason, FailureReason::Connect);
        assert_eq!(
            message,
            "cannot reach the endpoint (dispatch failure: io error: Connection refused (os error 111))"
        );
        for debug in ["DispatchFailure", "ConnectorError", "{", "kind:"] {
            assert!(!message.contains(debug), "{message}");
        }
    }

    #[test]
    fn millis() {
        assert_eq!(millis_to_seconds(1500.0), 1.5);
    }

    #[test]
    fn arn_parts() {
        assert_eq!(
            region_of("arn:aws:rds:us-west-2:123456789012:db:rep2", "us-east-1"),
            "us-west-2"
        );
        assert_eq!(region_of("rep1", "us-east-1"), "us-east-1");
        assert_eq!(
            identifier_of("arn:aws:rds:us-west-2:123456789012:db:rep2"),
            "rep2"
        );
        assert_eq!(
            identifier_of("arn:aws:rds:us-west-2:123456789012:cluster:c2"),
            "c2"
        );
        assert_eq!(identifier_of("rep1"), "rep1");
    }
}

/// The pair roles of a global resource (an Aurora global database, an
/// ElastiCache Global Datastore) from the regions its API names as writers
/// (`IsWriter`, `Role` = `PRIMARY`): the configured `region` is the
/// configured primary side, every other member region the replica side.
/// Both API families allow one member per region, so a region names a
/// member. Two writers are split brain whatever their regions. These kinds
/// write no heartbeat: a promotion's loss is predicted, never measured.
pub fn roles_by_region(
    home_region: &str,
    writer_regions: &[String],
) -> crate::evidence::promotion::PairRoles {
    use crate::evidence::promotion::{Direction, PairRoles, SideSeen};
    let home = writer_regions.iter().any(|r| r == home_region);
    let elsewhere = writer_regions.iter().any(|r| r != home_region);
    let two_writers = writer_regions.len() >= 2;
    let side = |writable: bool| SideSeen {
        writable: Some(writable || two_writers),
        ..SideSeen::default()
    };
    PairRoles {
        primary: side(home),
        replica: side(elsewhere),
        direction: if elsewhere && !home {
            Direction::Reverse
        } else {
            Direction::Forward
        },
        heartbeat_configured: false,
    }
}

/// A poll whose member call answered but left no secondary to measure: a
/// failover that left every member writing (split brain), or the one named
/// secondary now the writer. Nothing is proven (never a made-up lag), but
/// the roles are known, so the promotion or split brain is followed.
/// `described` is each asked region's member-call answer; the answer of
/// `writer_region` (as known before the poll) is the source side's.
pub fn roles_only<T>(
    link: crate::probe::LinkState,
    roles: crate::evidence::promotion::PairRoles,
    described: Vec<(String, Result<T, ProbeError>)>,
    writer_region: &str,
) -> crate::probe::Measurement {
    use crate::probe::{Measurement, Side};
    let mut measurement = Measurement::new(SystemTime::now());
    measurement.link = link;
    for (region, answer) in described {
        let side = if region == writer_region {
            Side::Source
        } else {
            Side::Replica
        };
        let reachable = match answer {
            Ok(_) => true,
            Err(err) => {
                measurement.failures.push(err.on(side));
                false
            }
        };
        let seen = match side {
            Side::Source => &mut measurement.source_reachable,
            _ => &mut measurement.replica_reachable,
        };
        *seen = Some(seen.unwrap_or(true) && reachable);
    }
    measurement.roles = Some(roles);
    measurement
}

#[cfg(test)]
mod roles_tests {
    use super::roles_by_region;
    use crate::evidence::promotion::{ConfiguredSide, Direction};

    fn regions(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_writer_region_decides_which_side_accepts_writes() {
        let before = roles_by_region("us-east-1", &regions(&["us-east-1"]));
        assert_eq!(before.sole_writer(), Some(ConfiguredSide::Primary));
        assert_eq!(before.replica.writable, Some(false));
        assert_eq!(before.direction, Direction::Forward);
        assert!(!before.heartbeat_configured);

        let after = roles_by_region("us-east-1", &regions(&["eu-west-1"]));
        assert_eq!(after.sole_writer(), Some(ConfiguredSide::Replica));
        assert_eq!(after.primary.writable, Some(false));
        assert_eq!(after.direction, Direction::Reverse);

        assert!(roles_by_region("us-east-1", &regions(&["us-east-1", "eu-west-1"])).split_brain());
        // Two writers neither in the configured region: still split brain.
        assert!(roles_by_region("us-east-1", &regions(&["eu-west-1", "us-west-2"])).split_brain());
        // No writer named at all (mid-failover): nobody accepts writes.
        let none = roles_by_region("us-east-1", &[]);
        assert_eq!(none.sole_writer(), None);
        assert!(!none.split_brain());
    }
}
