//! The keys every AWS kind takes, declared once: `region` (required),
//! `profile`, `role_arn` and `endpoint_url` ([`AwsAccess`]), the AWS kinds'
//! own defaults, and the names AWS accepts (regions, ARNs, identifiers).
//!
//! The AWS kinds' defaults differ from `[defaults]`: CloudWatch publishes
//! one-minute datapoints one to several minutes late, so polling every 5 s
//! would only cost money, and 30 s of evidence age would be stale forever.
//! Unless a target sets them, AWS kinds poll every
//! [`AWS_DEFAULT_POLL_INTERVAL`], time out after [`AWS_DEFAULT_TIMEOUT`] and
//! call evidence stale after [`AWS_DEFAULT_STALE_AFTER`] (`sqs`, whose counts
//! are live, after [`SQS_DEFAULT_STALE_AFTER`]).

use std::time::Duration;

use crate::config::{ConfigError, Defaults, TargetKeys};

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

/// The defaults of the CloudWatch-read AWS kinds (see the module doc).
pub const CLOUDWATCH_DEFAULTS: Defaults = Defaults {
    poll_interval: AWS_DEFAULT_POLL_INTERVAL,
    timeout: AWS_DEFAULT_TIMEOUT,
    stale_after: AWS_DEFAULT_STALE_AFTER,
};

/// The defaults of `sqs`, whose counts are live.
pub const SQS_DEFAULTS: Defaults = Defaults {
    poll_interval: AWS_DEFAULT_POLL_INTERVAL,
    timeout: AWS_DEFAULT_TIMEOUT,
    stale_after: SQS_DEFAULT_STALE_AFTER,
};

/// Why an AWS target's timeout has a floor ([`MIN_AWS_TIMEOUT`]).
pub const MIN_TIMEOUT_REASON: &str = "AWS calls (the CloudWatch batch alone waits 750ms)";

struct RawAccess {
    region: Option<String>,
    profile: Option<String>,
    role_arn: Option<String>,
    endpoint_url: Option<String>,
}

/// Takes the AWS access keys every AWS kind has (`region`, `profile`,
/// `role_arn`, `endpoint_url`) from a target's keys.
pub fn access(keys: &mut TargetKeys<'_>) -> Result<AwsAccess, ConfigError> {
    let raw = RawAccess {
        region: keys.take_string("region")?,
        profile: keys.take_string("profile")?,
        role_arn: keys.take_string("role_arn")?,
        endpoint_url: keys.take_string("endpoint_url")?,
    };
    let Some(region) = raw.region.as_deref() else {
        return Err(keys.invalid(
            "region",
            "is required for AWS kinds: the region of the source, like \"eu-central-1\"",
        ));
    };
    if !is_aws_region(region) {
        return Err(keys.invalid(
            "region",
            format!("`{region}` is not an AWS region name like \"eu-central-1\""),
        ));
    }
    if let Some(profile) = raw.profile.as_deref() {
        if profile.is_empty()
            || profile.len() > 128
            || !profile.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(keys.invalid(
                "profile",
                "must be a profile name of the shared AWS config file (printable, no spaces)",
            ));
        }
    }
    if let Some(role) = raw.role_arn.as_deref() {
        if parse_arn(role)
            .is_none_or(|arn| arn.service != "iam" || !arn.resource.starts_with("role/"))
        {
            return Err(keys.invalid(
            "role_arn",
                format!("`{role}` is not an IAM role ARN like \"arn:aws:iam::123456789012:role/rpo-exporter\""),
            ));
        }
    }
    if let Some(url) = raw.endpoint_url.as_deref() {
        let ok = reqwest::Url::parse(url).ok().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !ok {
            return Err(keys.invalid(
            "endpoint_url",
                "must be an http:// or https:// URL without credentials, like \"http://127.0.0.1:5000\"",
            ));
        }
    }
    Ok(AwsAccess {
        region: region.to_string(),
        profile: raw.profile,
        role_arn: raw.role_arn,
        endpoint_url: raw
            .endpoint_url
            .map(|u| u.trim_end_matches('/').to_string()),
    })
}

/// An RDS identifier, or an ARN of the given resource type (`db`, `cluster`).
pub fn check_rds_resource(
    keys: &TargetKeys<'_>,
    key: &str,
    value: &str,
    resource_type: &str,
) -> Result<(), ConfigError> {
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
    Err(keys.invalid(
        key,
        format!("`{value}` is neither an identifier (letters, digits, hyphens) nor an ARN like \"arn:aws:rds:eu-west-1:123456789012:{resource_type}:erp-replica\""),
    ))
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

pub fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub fn is_efs_id(id: &str) -> bool {
    id.strip_prefix("fs-").is_some_and(|hex| {
        (8..=40).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::kinds::aws::s3::{S3Target, DEFAULT_S3_CANARY_PREFIX};
    use crate::kinds::aws::sqs::SqsTarget;
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
        let spec = config.targets[0].spec::<S3Target>().unwrap();
        assert_eq!(spec.destination_region, "eu-west-1");
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
    fn s3_metrics_region_loads_only_as_the_destination_region_with_a_migration_note() {
        let s3 = |extra: &str| {
            format!("[[s3]]\nname = \"files\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nsource_bucket = \"erp-files\"\ndestination_bucket = \"erp-files-dr\"\ndestination_region = \"eu-west-1\"\n{extra}")
        };
        // What the documentation showed (and the default) still loads.
        assert!(load(&s3("metrics_region = \"eu-west-1\"")).is_ok());
        // Anything else read all four metrics in one wrong region: an error
        // that says where each is read now.
        let err = load(&s3("metrics_region = \"eu-central-1\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics_region")
                && err.contains("OperationsFailedReplication in the source bucket's region")
                && err.contains("remove `metrics_region`"),
            "{err}"
        );
    }

    #[test]
    fn efs_destination_region_needs_the_destination_id() {
        let efs = |extra: &str| {
            format!("[[efs]]\nname = \"f\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nfile_system_id = \"fs-0123456789abcdef0\"\n{extra}")
        };
        assert!(load(&efs("destination_file_system_id = \"fs-0fedcba9876543210\"\ndestination_region = \"eu-west-1\"")).is_ok());
        let err = load(&efs("destination_region = \"eu-west-1\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("destination_region") && err.contains("destination_file_system_id"),
            "{err}"
        );
        let err = load(&efs("destination_file_system_id = \"fs-0fedcba9876543210\"\ndestination_region = \"Ireland\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Ireland"), "{err}");
        let err = load(&efs(
            "destination_file_system_id = \"fs-0123456789abcdef0\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("is the source file system"), "{err}");
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
        let spec = config.targets[0].spec::<SqsTarget>().unwrap();
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
