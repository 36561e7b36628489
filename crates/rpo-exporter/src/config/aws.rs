//! The AWS kinds' configuration: `rds`, `aurora_global`,
//! `elasticache_global`, `s3`, `efs` and `sqs`.
//!
//! Every AWS kind takes the common target keys plus `region` (required),
//! `profile`, `role_arn` and `endpoint_url` ([`AwsAccess`]), and uses the
//! standard AWS credential chain. Their defaults differ from `[defaults]`:
//! CloudWatch publishes one-minute datapoints one to several minutes late, so
//! polling every 5 s would only cost money, and 30 s of evidence age would be
//! stale forever. Unless a target sets them, AWS kinds poll every
//! [`AWS_DEFAULT_POLL_INTERVAL`], time out after [`AWS_DEFAULT_TIMEOUT`] and
//! call evidence stale after [`AWS_DEFAULT_STALE_AFTER`] (`sqs`, whose counts
//! are live, after [`SQS_DEFAULT_STALE_AFTER`]).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Defaults, Group, RawCommon, Target, TargetSpec, Validator};

/// How often an AWS kind polls unless the target says otherwise.
pub const AWS_DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// An AWS call crosses regions and may be retried once after throttling.
pub const AWS_DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// CloudWatch delivers AWS metrics 1–5 minutes late (S3 replication metrics
/// up to 15): a datapoint older than this is stale.
pub const AWS_DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// `sqs` reads live counts; only the age of the oldest message is delayed.
pub const SQS_DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5 * 60);
/// The shortest timeout an AWS target accepts.
pub const MIN_AWS_TIMEOUT: Duration = Duration::from_secs(2);
/// The S3 canary's default interval and key prefix.
pub const DEFAULT_S3_CANARY_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_S3_CANARY_PREFIX: &str = "rpo-canary/";

/// Where and as whom an AWS kind calls AWS. Targets with equal access share
/// their SDK clients and their CloudWatch batches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsAccess {
    pub region: String,
    /// A named profile of the shared config/credentials files.
    pub profile: Option<String>,
    /// A role assumed (with STS) on top of the credential chain.
    pub role_arn: Option<String>,
    /// A different endpoint for every service, e.g. a local AWS emulator.
    pub endpoint_url: Option<String>,
}

impl AwsAccess {
    /// The same access in another region (a cross-region replica).
    pub fn in_region(&self, region: &str) -> AwsAccess {
        AwsAccess {
            region: region.to_string(),
            ..self.clone()
        }
    }
}

/// An RDS source instance and its read replicas.
#[derive(Debug, Clone)]
pub struct RdsTarget {
    pub access: AwsAccess,
    /// The source DB instance: an identifier (in `region`) or an ARN.
    pub source_instance: String,
    /// Replicas to measure (identifiers or ARNs); empty means every replica
    /// `DescribeDBInstances` lists for the source.
    pub replicas: Vec<String>,
}

/// An Aurora global database.
#[derive(Debug, Clone)]
pub struct AuroraGlobalTarget {
    pub access: AwsAccess,
    pub global_cluster: String,
    /// Secondary clusters to measure (identifiers or ARNs); empty means every
    /// member that is not the writer.
    pub secondary_clusters: Vec<String>,
}

/// An ElastiCache (Redis OSS / Valkey) Global Datastore.
#[derive(Debug, Clone)]
pub struct ElasticacheGlobalTarget {
    pub access: AwsAccess,
    pub global_replication_group: String,
    /// Only the secondary member in this region; `None` means every secondary.
    pub secondary_region: Option<String>,
}

/// S3 replication from a source bucket to a destination bucket.
#[derive(Debug, Clone)]
pub struct S3Target {
    pub access: AwsAccess,
    pub source_bucket: String,
    pub destination_bucket: String,
    pub destination_region: String,
    /// Where the replication metrics are read (default: the destination's region).
    pub metrics_region: String,
    /// Rules to measure; empty means every rule replicating to the destination bucket.
    pub rule_ids: Vec<String>,
    /// Read the CloudWatch replication metrics (they must be enabled on the rule).
    pub replication_metrics: bool,
    pub canary: Option<S3Canary>,
}

/// The S3 canary: an object with this exporter's clock, written to the
/// source and read back on the destination.
#[derive(Debug, Clone)]
pub struct S3Canary {
    pub interval: Duration,
    /// The key prefix; the exporter writes (overwrites) `{prefix}{instance}`.
    pub prefix: String,
}

/// EFS replication of one source file system.
#[derive(Debug, Clone)]
pub struct EfsTarget {
    pub access: AwsAccess,
    pub file_system_id: String,
    /// Only this destination; `None` means every destination.
    pub destination_file_system_id: Option<String>,
}

/// An SQS integration queue.
#[derive(Debug, Clone)]
pub struct SqsTarget {
    pub access: AwsAccess,
    pub queue: SqsQueue,
    pub dead_letter_queue: Option<SqsQueue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqsQueue {
    Url(String),
    Name(String),
}

impl SqsQueue {
    /// The queue's name, for messages and the CloudWatch dimension.
    pub fn name(&self) -> &str {
        match self {
            SqsQueue::Name(name) => name,
            SqsQueue::Url(url) => url.trim_end_matches('/').rsplit('/').next().unwrap_or(url),
        }
    }
}

// ---------------------------------------------------------------------------
// The file as written.

/// The AWS kinds' tables of the file, handed to validation together.
pub(super) struct RawAwsKinds {
    pub rds: Vec<RawRds>,
    pub aurora_global: Vec<RawAuroraGlobal>,
    pub elasticache_global: Vec<RawElasticacheGlobal>,
    pub s3: Vec<RawS3>,
    pub efs: Vec<RawEfs>,
    pub sqs: Vec<RawSqs>,
}

/// Declares a raw struct with the common keys, the AWS access keys and the
/// kind's own; serde's `flatten` cannot be combined with `deny_unknown_fields`.
macro_rules! raw_aws_kind {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            name: String,
            group: String,
            rpo_budget: Option<String>,
            poll_interval: Option<String>,
            timeout: Option<String>,
            stale_after: Option<String>,
            region: Option<String>,
            profile: Option<String>,
            role_arn: Option<String>,
            endpoint_url: Option<String>,
            $($field: $ty),*
        }

        impl $name {
            fn common(&self) -> RawCommon {
                RawCommon {
                    name: self.name.clone(),
                    group: self.group.clone(),
                    rpo_budget: self.rpo_budget.clone(),
                    poll_interval: self.poll_interval.clone(),
                    timeout: self.timeout.clone(),
                    stale_after: self.stale_after.clone(),
                }
            }

            fn raw_access(&self) -> RawAccess<'_> {
                RawAccess {
                    region: self.region.as_deref(),
                    profile: self.profile.as_deref(),
                    role_arn: self.role_arn.as_deref(),
                    endpoint_url: self.endpoint_url.as_deref(),
                }
            }
        }
    };
}

raw_aws_kind!(RawRds {
    source_instance: String,
    replicas: Option<Vec<String>>,
});
raw_aws_kind!(RawAuroraGlobal {
    global_cluster: String,
    secondary_clusters: Option<Vec<String>>,
});
raw_aws_kind!(RawElasticacheGlobal {
    global_replication_group: String,
    secondary_region: Option<String>,
});
raw_aws_kind!(RawS3 {
    source_bucket: String,
    destination_bucket: String,
    destination_region: Option<String>,
    metrics_region: Option<String>,
    rule_ids: Option<Vec<String>>,
    replication_metrics: Option<bool>,
    canary: Option<RawS3Canary>,
});
raw_aws_kind!(RawEfs {
    file_system_id: String,
    destination_file_system_id: Option<String>,
});
raw_aws_kind!(RawSqs {
    queue_url: Option<String>,
    queue_name: Option<String>,
    dead_letter_queue_url: Option<String>,
    dead_letter_queue_name: Option<String>,
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3Canary {
    interval: Option<String>,
    prefix: Option<String>,
}

struct RawAccess<'a> {
    region: Option<&'a str>,
    profile: Option<&'a str>,
    role_arn: Option<&'a str>,
    endpoint_url: Option<&'a str>,
}

// ---------------------------------------------------------------------------
// Validation.

impl Validator<'_> {
    /// Validates every AWS target and appends it to `targets`.
    pub(super) fn aws_targets(
        &self,
        raw: RawAwsKinds,
        targets: &mut Vec<Target>,
        groups: &[Group],
        defaults: &Defaults,
        defaults_set: &DefaultsSet,
    ) -> Result<(), ConfigError> {
        let cloudwatch = self.aws_defaults(defaults, defaults_set, AWS_DEFAULT_STALE_AFTER);
        let sqs_defaults = self.aws_defaults(defaults, defaults_set, SQS_DEFAULT_STALE_AFTER);
        for (i, raw) in raw.rds.into_iter().enumerate() {
            let key = format!("rds[{i}]");
            let spec = TargetSpec::Rds(self.rds(&key, &raw)?);
            let target = self.target(&key, raw.common(), groups, &cloudwatch, spec)?;
            self.aws_timeout(&key, &target)?;
            self.push_target(targets, &key, target)?;
        }
        for (i, raw) in raw.aurora_global.into_iter().enumerate() {
            let key = format!("aurora_global[{i}]");
            let spec = TargetSpec::AuroraGlobal(self.aurora_global(&key, &raw)?);
            let target = self.target(&key, raw.common(), groups, &cloudwatch, spec)?;
            self.aws_timeout(&key, &target)?;
            self.push_target(targets, &key, target)?;
        }
        for (i, raw) in raw.elasticache_global.into_iter().enumerate() {
            let key = format!("elasticache_global[{i}]");
            let spec = TargetSpec::ElasticacheGlobal(self.elasticache_global(&key, &raw)?);
            let target = self.target(&key, raw.common(), groups, &cloudwatch, spec)?;
            self.aws_timeout(&key, &target)?;
            self.push_target(targets, &key, target)?;
        }
        for (i, raw) in raw.s3.into_iter().enumerate() {
            let key = format!("s3[{i}]");
            let spec = TargetSpec::S3(self.s3(&key, &raw)?);
            let target = self.target(&key, raw.common(), groups, &cloudwatch, spec)?;
            self.aws_timeout(&key, &target)?;
            self.push_target(targets, &key, target)?;
        }
        for (i, raw) in raw.efs.into_iter().enumerate() {
            let key = format!("efs[{i}]");
            let spec = TargetSpec::Efs(self.efs(&key, &raw)?);
            let target = self.target(&key, raw.common(), groups, &cloudwatch, spec)?;
            self.aws_timeout(&key, &target)?;
            self.push_target(targets, &key, target)?;
        }
        for (i, raw) in raw.sqs.into_iter().enumerate() {
            let key = format!("sqs[{i}]");
            let spec = TargetSpec::Sqs(self.sqs(&key, &raw)?);
            let target = self.target(&key, raw.common(), groups, &sqs_defaults, spec)?;
            self.aws_timeout(&key, &target)?;
            self.push_target(targets, &key, target)?;
        }
        Ok(())
    }

    /// An AWS target's timeout must leave room for the CloudWatch batch
    /// window and a cross-region call.
    fn aws_timeout(&self, key: &str, target: &Target) -> Result<(), ConfigError> {
        if target.timeout < MIN_AWS_TIMEOUT {
            return Err(self.invalid(
                format!("{key} (\"{}\").timeout", target.name),
                format!(
                    "{} is too short for AWS calls (the CloudWatch batch alone waits 750ms); use at least {}",
                    humantime::format_duration(target.timeout),
                    humantime::format_duration(MIN_AWS_TIMEOUT)
                ),
            ));
        }
        Ok(())
    }

    /// The defaults of the AWS kinds: the kind's own, unless `[defaults]`
    /// sets a key explicitly and it is at least as long (a 5 s default poll
    /// interval meant for databases never makes a CloudWatch kind poll every
    /// 5 s; an explicit `[defaults] stale_after = "30m"` still applies).
    fn aws_defaults(
        &self,
        defaults: &Defaults,
        set: &DefaultsSet,
        stale_after: Duration,
    ) -> Defaults {
        let pick = |explicit: bool, value: Duration, kind: Duration| {
            if explicit && value >= kind {
                value
            } else {
                kind
            }
        };
        Defaults {
            poll_interval: pick(
                set.poll_interval,
                defaults.poll_interval,
                AWS_DEFAULT_POLL_INTERVAL,
            ),
            timeout: pick(set.timeout, defaults.timeout, AWS_DEFAULT_TIMEOUT),
            stale_after: pick(set.stale_after, defaults.stale_after, stale_after),
        }
    }

    fn aws_access(&self, key: &str, raw: RawAccess<'_>) -> Result<AwsAccess, ConfigError> {
        let Some(region) = raw.region else {
            return Err(self.invalid(
                format!("{key}.region"),
                "is required for AWS kinds: the region of the source, like \"eu-central-1\"",
            ));
        };
        if !is_aws_region(region) {
            return Err(self.invalid(
                format!("{key}.region"),
                format!("`{region}` is not an AWS region name like \"eu-central-1\""),
            ));
        }
        if let Some(profile) = raw.profile {
            if profile.is_empty()
                || profile.len() > 128
                || !profile.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(self.invalid(
                    format!("{key}.profile"),
                    "must be a profile name of the shared AWS config file (printable, no spaces)",
                ));
            }
        }
        if let Some(role) = raw.role_arn {
            if parse_arn(role)
                .is_none_or(|arn| arn.service != "iam" || !arn.resource.starts_with("role/"))
            {
                return Err(self.invalid(
                    format!("{key}.role_arn"),
                    format!("`{role}` is not an IAM role ARN like \"arn:aws:iam::123456789012:role/rpo-exporter\""),
                ));
            }
        }
        if let Some(url) = raw.endpoint_url {
            let ok = reqwest::Url::parse(url).ok().is_some_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
            });
            if !ok {
                return Err(self.invalid(
                    format!("{key}.endpoint_url"),
                    "must be an http:// or https:// URL without credentials, like \"http://127.0.0.1:5000\"",
                ));
            }
        }
        Ok(AwsAccess {
            region: region.to_string(),
            profile: raw.profile.map(str::to_string),
            role_arn: raw.role_arn.map(str::to_string),
            endpoint_url: raw
                .endpoint_url
                .map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    fn rds(&self, key: &str, raw: &RawRds) -> Result<RdsTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let access = self.aws_access(&key, raw.raw_access())?;
        self.rds_resource(
            &format!("{key}.source_instance"),
            &raw.source_instance,
            "db",
        )?;
        let replicas = raw.replicas.clone().unwrap_or_default();
        for (i, replica) in replicas.iter().enumerate() {
            self.rds_resource(&format!("{key}.replicas[{i}]"), replica, "db")?;
        }
        if raw.replicas.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.invalid(
                format!("{key}.replicas"),
                "is empty; list the replicas to measure, or remove the key to measure every replica of the source",
            ));
        }
        Ok(RdsTarget {
            access,
            source_instance: raw.source_instance.clone(),
            replicas,
        })
    }

    fn aurora_global(
        &self,
        key: &str,
        raw: &RawAuroraGlobal,
    ) -> Result<AuroraGlobalTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let access = self.aws_access(&key, raw.raw_access())?;
        if !is_rds_identifier(&raw.global_cluster) {
            return Err(self.invalid(
                format!("{key}.global_cluster"),
                "must be a global cluster identifier: letters, digits and hyphens, starting with a letter",
            ));
        }
        let secondary_clusters = raw.secondary_clusters.clone().unwrap_or_default();
        for (i, cluster) in secondary_clusters.iter().enumerate() {
            self.rds_resource(
                &format!("{key}.secondary_clusters[{i}]"),
                cluster,
                "cluster",
            )?;
        }
        Ok(AuroraGlobalTarget {
            access,
            global_cluster: raw.global_cluster.clone(),
            secondary_clusters,
        })
    }

    fn elasticache_global(
        &self,
        key: &str,
        raw: &RawElasticacheGlobal,
    ) -> Result<ElasticacheGlobalTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let access = self.aws_access(&key, raw.raw_access())?;
        let id = &raw.global_replication_group;
        if id.is_empty()
            || id.len() > 255
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(self.invalid(
                format!("{key}.global_replication_group"),
                "must be a Global Datastore id like \"ldgnf-erp-sessions\" (letters, digits, hyphens)",
            ));
        }
        if let Some(region) = &raw.secondary_region {
            if !is_aws_region(region) {
                return Err(self.invalid(
                    format!("{key}.secondary_region"),
                    format!("`{region}` is not an AWS region name like \"eu-west-1\""),
                ));
            }
        }
        Ok(ElasticacheGlobalTarget {
            access,
            global_replication_group: id.clone(),
            secondary_region: raw.secondary_region.clone(),
        })
    }

    fn s3(&self, key: &str, raw: &RawS3) -> Result<S3Target, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let access = self.aws_access(&key, raw.raw_access())?;
        for (name, bucket) in [
            ("source_bucket", &raw.source_bucket),
            ("destination_bucket", &raw.destination_bucket),
        ] {
            if !is_bucket_name(bucket) {
                return Err(self.invalid(
                    format!("{key}.{name}"),
                    format!("`{bucket}` is not a bucket name (3-63 lower-case letters, digits, '.', '-'); give the name, not an ARN"),
                ));
            }
        }
        if raw.source_bucket == raw.destination_bucket {
            return Err(self.invalid(
                format!("{key}.destination_bucket"),
                "is the source bucket; name the bucket replication copies to",
            ));
        }
        let region_of =
            |name: &str, value: &Option<String>, default: &str| -> Result<String, ConfigError> {
                match value {
                    Some(region) if is_aws_region(region) => Ok(region.clone()),
                    Some(region) => Err(self.invalid(
                        format!("{key}.{name}"),
                        format!("`{region}` is not an AWS region name like \"eu-west-1\""),
                    )),
                    None => Ok(default.to_string()),
                }
            };
        let destination_region = region_of(
            "destination_region",
            &raw.destination_region,
            &access.region,
        )?;
        let metrics_region = region_of("metrics_region", &raw.metrics_region, &destination_region)?;
        let rule_ids = raw.rule_ids.clone().unwrap_or_default();
        for (i, rule) in rule_ids.iter().enumerate() {
            if rule.is_empty() || rule.len() > 255 || rule.chars().any(char::is_control) {
                return Err(self.invalid(
                    format!("{key}.rule_ids[{i}]"),
                    "must be a rule ID of 1 to 255 characters",
                ));
            }
        }
        let canary = match &raw.canary {
            None => None,
            Some(canary) => {
                let interval = self.optional_duration(
                    &format!("{key}.canary.interval"),
                    canary.interval.as_ref(),
                    DEFAULT_S3_CANARY_INTERVAL,
                )?;
                let prefix = canary
                    .prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_S3_CANARY_PREFIX.to_string());
                if prefix.is_empty()
                    || prefix.len() > 512
                    || prefix.starts_with('/')
                    || !prefix.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(self.invalid(
                        format!("{key}.canary.prefix"),
                        "must be a key prefix of printable characters without spaces, not starting with '/', like \"rpo-canary/\"",
                    ));
                }
                Some(S3Canary { interval, prefix })
            }
        };
        let replication_metrics = raw.replication_metrics.unwrap_or(true);
        if !replication_metrics && canary.is_none() {
            return Err(self.invalid(
                format!("{key}.replication_metrics"),
                "is false and no canary is configured: nothing would measure the recovery point; add `canary = { interval = \"30s\" }` or enable the metrics",
            ));
        }
        Ok(S3Target {
            access,
            source_bucket: raw.source_bucket.clone(),
            destination_bucket: raw.destination_bucket.clone(),
            destination_region,
            metrics_region,
            rule_ids,
            replication_metrics,
            canary,
        })
    }

    fn efs(&self, key: &str, raw: &RawEfs) -> Result<EfsTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let access = self.aws_access(&key, raw.raw_access())?;
        for (name, id) in [
            ("file_system_id", Some(&raw.file_system_id)),
            (
                "destination_file_system_id",
                raw.destination_file_system_id.as_ref(),
            ),
        ] {
            if let Some(id) = id {
                if !is_efs_id(id) {
                    return Err(self.invalid(
                        format!("{key}.{name}"),
                        format!("`{id}` is not a file system ID like \"fs-0123456789abcdef0\""),
                    ));
                }
            }
        }
        Ok(EfsTarget {
            access,
            file_system_id: raw.file_system_id.clone(),
            destination_file_system_id: raw.destination_file_system_id.clone(),
        })
    }

    fn sqs(&self, key: &str, raw: &RawSqs) -> Result<SqsTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let access = self.aws_access(&key, raw.raw_access())?;
        let queue = self
            .sqs_queue(&key, "queue", raw.queue_url.as_deref(), raw.queue_name.as_deref())?
            .ok_or_else(|| {
                self.invalid(
                    format!("{key}.queue_url"),
                    "set `queue_url` (like \"https://sqs.eu-central-1.amazonaws.com/123456789012/erp-outbox\") or `queue_name`",
                )
            })?;
        let dead_letter_queue = self.sqs_queue(
            &key,
            "dead_letter_queue",
            raw.dead_letter_queue_url.as_deref(),
            raw.dead_letter_queue_name.as_deref(),
        )?;
        Ok(SqsTarget {
            access,
            queue,
            dead_letter_queue,
        })
    }

    fn sqs_queue(
        &self,
        key: &str,
        name: &str,
        url: Option<&str>,
        queue_name: Option<&str>,
    ) -> Result<Option<SqsQueue>, ConfigError> {
        match (url, queue_name) {
            (Some(_), Some(_)) => Err(self.invalid(
                format!("{key}.{name}_url"),
                format!("set one of `{name}_url` or `{name}_name`, not both"),
            )),
            (Some(url), None) => {
                let ok = reqwest::Url::parse(url).ok().is_some_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path_segments()
                            .is_some_and(|s| s.filter(|p| !p.is_empty()).count() >= 2)
                });
                if !ok {
                    return Err(self.invalid(
                        format!("{key}.{name}_url"),
                        "is not a queue URL like \"https://sqs.eu-central-1.amazonaws.com/123456789012/erp-outbox\"",
                    ));
                }
                Ok(Some(SqsQueue::Url(url.to_string())))
            }
            (None, Some(queue_name)) => {
                let base = queue_name.strip_suffix(".fifo").unwrap_or(queue_name);
                if base.is_empty()
                    || queue_name.len() > 80
                    || !base
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(self.invalid(
                        format!("{key}.{name}_name"),
                        "is not a queue name (1-80 letters, digits, '-', '_', optionally ending in .fifo)",
                    ));
                }
                Ok(Some(SqsQueue::Name(queue_name.to_string())))
            }
            (None, None) => Ok(None),
        }
    }

    /// An RDS identifier, or an ARN of the given resource type (`db`, `cluster`).
    fn rds_resource(&self, key: &str, value: &str, resource_type: &str) -> Result<(), ConfigError> {
        if is_rds_identifier(value) {
            return Ok(());
        }
        if let Some(arn) = parse_arn(value) {
            if arn.service == "rds"
                && is_aws_region(arn.region)
                && arn
                    .resource
                    .strip_prefix(resource_type)
                    .and_then(|r| r.strip_prefix(':'))
                    .is_some_and(is_rds_identifier)
            {
                return Ok(());
            }
        }
        Err(self.invalid(
            key,
            format!("`{value}` is neither an identifier (letters, digits, hyphens) nor an ARN like \"arn:aws:rds:eu-west-1:123456789012:{resource_type}:erp-replica\""),
        ))
    }
}

/// Which keys of `[defaults]` the file sets explicitly.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DefaultsSet {
    pub poll_interval: bool,
    pub timeout: bool,
    pub stale_after: bool,
}

/// The parts of an ARN: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

pub fn parse_arn(text: &str) -> Option<Arn<'_>> {
    let mut parts = text.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let arn = Arn {
        partition: parts.next()?,
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    };
    (arn.partition.starts_with("aws") && !arn.service.is_empty() && !arn.resource.is_empty())
        .then_some(arn)
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
pub fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    region.len() <= 32
        && parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// An RDS instance or cluster identifier: a letter first, then letters,
/// digits and single hyphens, at most 63 characters.
pub fn is_rds_identifier(id: &str) -> bool {
    id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--")
}

fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_efs_id(id: &str) -> bool {
    id.strip_prefix("fs-").is_some_and(|hex| {
        (8..=40).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = r#"
[defaults]
poll_interval = "2s"
stale_after = "20s"

[[group]]
name = "erp"
rpo_budget = "10m"
"#;

    fn load(targets: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{targets}"), Path::new("test.toml"))
    }

    #[test]
    fn rds_target_takes_kind_defaults_not_the_database_defaults() {
        let config = load(
            r#"
[[rds]]
name = "erp-rds"
group = "erp"
region = "eu-central-1"
source_instance = "erp-db"
"#,
        )
        .unwrap();
        let target = &config.targets[0];
        assert_eq!(target.poll_interval, AWS_DEFAULT_POLL_INTERVAL);
        assert_eq!(target.stale_after, AWS_DEFAULT_STALE_AFTER);
        assert_eq!(target.timeout, AWS_DEFAULT_TIMEOUT);
        assert_eq!(target.kind().as_str(), "rds");
    }

    #[test]
    fn region_is_required_and_checked() {
        let err = load("[[sqs]]\nname = \"q\"\ngroup = \"erp\"\nqueue_name = \"outbox\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("region"), "{err}");
        let err = load("[[sqs]]\nname = \"q\"\ngroup = \"erp\"\nregion = \"Frankfurt\"\nqueue_name = \"outbox\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Frankfurt"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[[efs]]\nname = \"f\"\ngroup = \"erp\"\nregion = \"eu-west-1\"\nfile_system_id = \"fs-0123456789abcdef0\"\nfilesystem = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("filesystem"), "{err}");
    }

    #[test]
    fn s3_needs_some_evidence_and_checks_names() {
        let s3 = |extra: &str| {
            format!("[[s3]]\nname = \"files\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nsource_bucket = \"erp-files\"\ndestination_bucket = \"erp-files-dr\"\ndestination_region = \"eu-west-1\"\n{extra}")
        };
        let config = load(&s3("canary = { interval = \"10s\" }")).unwrap();
        let TargetSpec::S3(spec) = &config.targets[0].spec else {
            panic!()
        };
        assert_eq!(spec.metrics_region, "eu-west-1");
        assert_eq!(
            spec.canary.as_ref().unwrap().prefix,
            DEFAULT_S3_CANARY_PREFIX
        );
        let err = load(&s3("replication_metrics = false"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("canary"), "{err}");
        let err = load(&s3("").replace("erp-files-dr", "arn:aws:s3:::erp-files-dr"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("destination_bucket"), "{err}");
    }

    #[test]
    fn rds_accepts_ids_and_arns_only() {
        let rds = |replica: &str| {
            format!("[[rds]]\nname = \"db\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nsource_instance = \"erp-db\"\nreplicas = [\"{replica}\"]\n")
        };
        assert!(load(&rds("arn:aws:rds:eu-west-1:123456789012:db:erp-db-dr")).is_ok());
        let err = load(&rds("arn:aws:rds:eu-west-1:123456789012:cluster:x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("replicas[0]"), "{err}");
    }

    #[test]
    fn sqs_queue_forms() {
        let sqs = |keys: &str| {
            format!("[[sqs]]\nname = \"q\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\n{keys}\n")
        };
        let config = load(&sqs("queue_url = \"https://sqs.eu-central-1.amazonaws.com/123456789012/erp-outbox\"\ndead_letter_queue_name = \"erp-outbox-dlq\"")).unwrap();
        let TargetSpec::Sqs(spec) = &config.targets[0].spec else {
            panic!()
        };
        assert_eq!(spec.queue.name(), "erp-outbox");
        assert_eq!(config.targets[0].stale_after, SQS_DEFAULT_STALE_AFTER);
        let err = load(&sqs("queue_url = \"https://x/1/q\"\nqueue_name = \"q\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn explicit_longer_defaults_apply_to_aws_kinds() {
        let text = format!(
            "{}\n[[sqs]]\nname = \"q\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nqueue_name = \"q\"\n",
            BASE.replace("stale_after = \"20s\"", "stale_after = \"30m\"")
        );
        let config = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        assert_eq!(config.targets[0].stale_after, Duration::from_secs(1800));
        assert_eq!(config.targets[0].poll_interval, AWS_DEFAULT_POLL_INTERVAL);
    }

    #[test]
    fn aws_timeout_has_a_floor() {
        let err = load("[[sqs]]\nname = \"q\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nqueue_name = \"q\"\ntimeout = \"500ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timeout") && err.contains("at least 2s"),
            "{err}"
        );
    }

    #[test]
    fn names() {
        assert!(is_aws_region("us-gov-west-1"));
        assert!(!is_aws_region("us-east"));
        assert!(is_rds_identifier("erp-db-1"));
        assert!(!is_rds_identifier("1db"));
        assert!(is_efs_id("fs-0123abcd"));
        assert_eq!(
            parse_arn("arn:aws:rds:eu-west-1:1:db:x").unwrap().resource,
            "db:x"
        );
    }
}
