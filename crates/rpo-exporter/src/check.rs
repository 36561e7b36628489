//! `rpo-exporter check`: one poll round (or rounds until GO, with `--wait`),
//! or the verdict of a running exporter (`--from URL`), printed as a table
//! for a person on a bridge call or as JSON for automation.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::drivers::http::redacted_url;
use crate::kinds;
use crate::poller::{heartbeat_and_record, poll_and_record, StateLog};
use crate::probe::ProbeContext;
use crate::readiness::{
    evaluate, human_duration, Mode, Reason, ReasonCode, ReasonJson, VerdictJson, SCHEMA_VERSION,
};
use crate::store::{Store, TargetId};

mod prometheus;
pub use prometheus::{check_prometheus, PrometheusGate, DEFAULT_MAX_SAMPLE_AGE};

/// The pause between the two samples of `check`'s first round.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Output, String> {
        match s {
            "table" => Ok(Output::Table),
            "json" => Ok(Output::Json),
            other => Err(format!("unknown output `{other}`: use table or json")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub group: Option<String>,
    pub mode: Mode,
    pub wait: Option<Duration>,
    /// How `--from` and `--prometheus` reach a server behind TLS with a
    /// private CA and basic authentication (an exporter served with
    /// `--web.config.file`, a secured Prometheus).
    pub access: RemoteAccess,
}

/// `--http.ca-file`, `--http.username`, `--http.password-file`.
#[derive(Debug, Clone, Default)]
pub struct RemoteAccess {
    /// PEM certificates trusted besides the public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Basic authentication: the user and the password read from a file
    /// (never from the command line, where `ps` would show it).
    pub basic_auth: Option<(String, crate::config::Secret)>,
}

impl RemoteAccess {
    /// From the flags; a username without a password file (or the
    /// reverse), an unreadable file or a bad CA file is a usage error
    /// naming the flag.
    pub fn from_flags(
        ca_file: Option<std::path::PathBuf>,
        username: Option<String>,
        password_file: Option<std::path::PathBuf>,
    ) -> Result<RemoteAccess, CheckError> {
        let bad = |flag: &'static str, problem: String| CheckError::BadFlag { flag, problem };
        let basic_auth = match (username, password_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "--http.username",
                    "give its password with --http.password-file FILE".to_string(),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "--http.password-file",
                    "give the user with --http.username".to_string(),
                ))
            }
            (Some(user), Some(path)) => {
                if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                    return Err(bad(
                        "--http.username",
                        "must be non-empty, without ':' or control characters".to_string(),
                    ));
                }
                let password = std::fs::read_to_string(&path).map_err(|e| {
                    bad(
                        "--http.password-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let password = password.trim_end_matches(['\r', '\n']).to_string();
                Some((user, crate::config::Secret::new(password)))
            }
        };
        let access = RemoteAccess {
            ca_file,
            basic_auth,
        };
        // Read the CA file now: a mistake is a usage error, not a NO-GO.
        access.client(Duration::from_secs(1))?;
        Ok(access)
    }

    /// A client trusting the public roots and `ca_file`.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, CheckError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .user_agent(concat!("rpo-exporter/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &self.ca_file {
            let certificates =
                crate::drivers::ca_certificates("--http.ca-file", path).map_err(|e| {
                    CheckError::BadFlag {
                        flag: "--http.ca-file",
                        problem: e.message,
                    }
                })?;
            for der in certificates {
                let certificate =
                    reqwest::Certificate::from_der(&der).map_err(|e| CheckError::BadFlag {
                        flag: "--http.ca-file",
                        problem: format!("{}: {e}", path.display()),
                    })?;
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((user, password)) = &self.basic_auth {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.expose()));
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| CheckError::BadFlag {
                    flag: "--http.password-file",
                    problem: "the password holds characters a header cannot carry".to_string(),
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        builder.build().map_err(|e| CheckError::BadFlag {
            flag: "--http.ca-file",
            problem: format!("HTTP client setup failed: {}", e.without_url()),
        })
    }
}

/// Why `check` could not produce a verdict at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown group `{group}`; configured groups: {known}")]
    UnknownGroup { group: String, known: String },
    /// `--region` names a region no exporter known to Prometheus runs in.
    #[error("unknown region `{region}`; the exporters Prometheus knows run in: {known}")]
    UnknownRegion { region: String, known: String },
    /// A flag's value is unusable (a file that cannot be read, a missing
    /// companion flag).
    #[error("{flag}: {problem}")]
    BadFlag { flag: &'static str, problem: String },
    #[error("{flag} `{url}` is not a base URL: {problem}")]
    BadUrl {
        flag: &'static str,
        url: String,
        problem: String,
    },
    /// `--from`: the exporter refused the question (an unknown group, a
    /// bad parameter): the caller's mistake, not a NO-GO.
    #[error("the exporter at {url} refused the request (HTTP {status}): {problem}")]
    Refused {
        url: String,
        status: u16,
        problem: String,
    },
}

/// Checks the base URL given to `flag` (`--from`, `--prometheus`): an
/// `http://` or `https://` URL with a host, like `http://prometheus:9090`.
/// A URL without its scheme is a usage error, not an unreachable server.
pub fn parse_base_url(flag: &'static str, url: &str) -> Result<reqwest::Url, CheckError> {
    let bad = |problem: &str| CheckError::BadUrl {
        flag,
        // Never echo a password given in the URL.
        url: match reqwest::Url::parse(url) {
            Ok(parsed) => shown_url(&parsed),
            // Unparsable: shown only when it cannot hold credentials.
            Err(_) if url.contains(['@', '?']) => "<the given URL>".to_string(),
            Err(_) => url.to_string(),
        },
        problem: problem.to_string(),
    };
    let example = "write it with its scheme, like http://prometheus:9090";
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("{e}; {example}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(bad(&format!("not an http(s) URL; {example}")));
    }
    Ok(parsed)
}

/// A URL as messages show it: without user, password or query (the one
/// redaction every printed URL goes through).
pub fn shown_url(url: &reqwest::Url) -> String {
    redacted_url(url.as_str()).trim_end_matches('/').to_string()
}

/// Polls the configured targets (once, or until GO within `wait`) and
/// returns the verdict.
pub async fn check_config(
    mut config: Config,
    options: &CheckOptions,
) -> Result<VerdictJson, CheckError> {
    if let Some(group) = &options.group {
        if config.group(group).is_none() {
            return Err(CheckError::UnknownGroup {
                group: group.clone(),
                known: config.group_names(),
            });
        }
    }
    // A check run writes and reads its own heartbeat, never the daemon's.
    config.instance = format!("{}-check", config.instance);
    let config = Arc::new(config);
    let store = Store::new(config.targets.iter().map(TargetId::of));
    let selected: Vec<&crate::config::Target> = config
        .targets
        .iter()
        .filter(|t| options.group.as_ref().is_none_or(|g| &t.group == g))
        .collect();

    // The run's own AWS call counters: `check` prints no metrics, but the
    // AWS probes count in something explicit, never a static.
    let context = ProbeContext::new(config.instance.clone());
    let mut probes = Vec::new();
    for &target in &selected {
        let id = TargetId::of(target);
        match kinds::build(target, &context) {
            Ok(mut probe) => {
                let writer = probe.heartbeat_writer();
                probes.push((id, target, Some(probe), writer, Logs::default()));
            }
            Err(error) => {
                let now = SystemTime::now();
                store.record_poll(&id, now, now, Err(error));
                probes.push((id, target, None, None, Logs::default()));
            }
        }
    }

    let deadline = options.wait.map(|w| Instant::now() + w);
    let pause = selected
        .iter()
        .map(|t| t.poll_interval)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut first_round = true;
    loop {
        let round = probes.iter_mut().map(|(id, target, probe, writer, logs)| {
            let store = &store;
            async move {
                if let Some(writer) = writer {
                    heartbeat_and_record(id, target, writer.as_mut(), store, &mut logs.heartbeat)
                        .await;
                }
                if let Some(probe) = probe {
                    poll_and_record(id, target, probe.as_mut(), store, &mut logs.poll).await;
                }
            }
        });
        futures::future::join_all(round).await;
        if first_round {
            // One sample can only prove "caught up at this instant"; a replica
            // a few milliseconds behind (the heartbeat just written) needs an
            // earlier sample of the source to be dated by. Take a second one.
            first_round = false;
            tokio::time::sleep(SETTLE).await;
            let again = probes
                .iter_mut()
                .filter_map(|(id, target, probe, _, logs)| {
                    let store = &store;
                    probe.as_mut().map(|probe| async move {
                        poll_and_record(id, target, probe.as_mut(), store, &mut logs.poll).await
                    })
                });
            futures::future::join_all(again).await;
        }
        let verdict = evaluate(
            &config,
            &store.snapshot(),
            options.mode,
            SystemTime::now(),
            options.group.as_deref(),
        );
        match deadline {
            Some(deadline) if !verdict.ready && Instant::now() + pause < deadline => {
                tracing::info!(reasons = ?verdict.groups.iter().flat_map(|g| g.reasons.iter().map(|r| r.message.as_str())).collect::<Vec<_>>(), "NO-GO; polling again");
                tokio::time::sleep(pause).await;
            }
            _ => return Ok(verdict.to_json()),
        }
    }
}

/// One target's log states in a `check` run: each failure is logged once
/// (on stderr), not once per round.
#[derive(Default)]
struct Logs {
    poll: StateLog,
    heartbeat: StateLog,
}

/// Asks a running exporter for its verdict. An exporter that cannot be
/// reached, or answers nonsense, is a NO-GO with that reason; one that
/// refuses the question (HTTP 400 or 404 with its JSON error: an unknown
/// group) is a usage error, as the same mistake with `--config` is.
pub async fn check_remote(
    base_url: &str,
    options: &CheckOptions,
    timeout: Duration,
) -> Result<VerdictJson, CheckError> {
    let deadline = options.wait.map(|w| Instant::now() + w);
    let shown = redacted_url(base_url);
    let client = options.access.client(timeout)?;
    let mut url = format!(
        "{}/failover-readiness?mode={}",
        base_url.trim_end_matches('/'),
        options.mode
    );
    if let Some(group) = &options.group {
        let _ = write!(url, "&group={group}");
    }
    loop {
        let verdict = match client.get(&url).send().await {
            Err(error) => unreachable_verdict(
                options.mode,
                format!(
                    "exporter at {shown} cannot be reached: {}",
                    without_url(&error)
                ),
            ),
            Ok(response) => {
                let status = response.status();
                match response.json::<serde_json::Value>().await {
                    Ok(value) => match serde_json::from_value::<VerdictJson>(value.clone()) {
                        Ok(verdict) => verdict,
                        Err(_) if is_refusal(status, &value) => {
                            return Err(CheckError::Refused {
                                url: shown.clone(),
                                status: status.as_u16(),
                                problem: value["error"].as_str().unwrap_or_default().to_string(),
                            })
                        }
                        Err(_) => unreachable_verdict(
                            options.mode,
                            format!(
                                "exporter at {shown} answered HTTP {status}: {}",
                                value
                                    .get("error")
                                    .and_then(|e| e.as_str())
                                    .unwrap_or("not a verdict")
                            ),
                        ),
                    },
                    Err(_) => unreachable_verdict(
                        options.mode,
                        format!("exporter at {shown} answered HTTP {status} without a verdict"),
                    ),
                }
            }
        };
        match deadline {
            Some(deadline)
                if !verdict.ready && Instant::now() + Duration::from_secs(1) < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return Ok(verdict),
        }
    }
}

/// The exporter's own answer to a bad question: HTTP 400 or 404 with the
/// `{"error": "..."}` body `/failover-readiness` sends (a 404 from anything
/// else at that address is no verdict, a NO-GO).
fn is_refusal(status: reqwest::StatusCode, body: &serde_json::Value) -> bool {
    matches!(status.as_u16(), 400 | 404) && body["error"].is_string() && body["ready"] == false
}

/// A transport error without the URL (it may carry credentials): its kind
/// and the chain of causes.
fn without_url(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    message
}

/// The exporter gave no verdict: NO-GO, saying why.
fn unreachable_verdict(mode: Mode, message: String) -> VerdictJson {
    verdict_from_reasons(
        mode,
        vec![Reason::new(ReasonCode::ExporterUnavailable, message)],
    )
}

/// A verdict without per-target detail: GO exactly when there is no reason.
fn verdict_from_reasons(mode: Mode, reasons: Vec<Reason>) -> VerdictJson {
    let now = SystemTime::now();
    let ready = reasons.is_empty();
    VerdictJson {
        schema_version: SCHEMA_VERSION,
        verdict: if ready { "GO" } else { "NO-GO" }.to_string(),
        ready,
        mode: mode.to_string(),
        evaluated_at: humantime::format_rfc3339_millis(now).to_string(),
        evaluated_at_unix: crate::probe::unix_seconds(now),
        exporter: None,
        exporters: Vec::new(),
        reasons: reasons.iter().map(|r| r.message.clone()).collect(),
        reason_details: reasons.iter().map(ReasonJson::new).collect(),
        groups: Vec::new(),
    }
}

/// The width the table keeps to: a terminal on a bridge call.
pub const TABLE_WIDTH: usize = 120;

/// The table a person reads at a glance: one block per group, one row per
/// target with its most fundamental reason (cut to fit [`TABLE_WIDTH`]),
/// and every reason in full below the table.
pub fn render_table(verdict: &VerdictJson) -> String {
    let mut out = String::new();
    let by = verdict
        .exporter
        .as_ref()
        .map(|e| format!(", {e}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "VERDICT: {}  ({} mode, evaluated {}{by})",
        verdict.verdict,
        verdict.mode,
        verdict.evaluated_at.replace('T', " ")
    );
    if !verdict.exporters.is_empty() {
        let mut rows = vec![[
            "EXPORTER".to_string(),
            "REGION".to_string(),
            "SCRAPED AT".to_string(),
            "VERDICT".to_string(),
        ]];
        for e in &verdict.exporters {
            rows.push([
                e.instance.clone().unwrap_or_else(|| "unknown".to_string()),
                e.region.clone().unwrap_or_else(|| "-".to_string()),
                e.scrape_instance.clone().unwrap_or_default(),
                e.verdict.clone().unwrap_or_default(),
            ]);
        }
        let _ = writeln!(out);
        write_columns(&mut out, &rows);
        let _ = writeln!(out);
    }
    if verdict.groups.is_empty() {
        for reason in &verdict.reasons {
            write_wrapped(&mut out, "  - ", "    ", reason);
        }
    }
    let secs = |s: Option<f64>| {
        s.map(|v| human_duration(Duration::from_secs_f64(v.max(0.0))))
            .unwrap_or_else(|| "-".to_string())
    };
    let today = verdict.evaluated_at.split('T').next().unwrap_or_default();
    for group in &verdict.groups {
        let _ = writeln!(
            out,
            "\nGROUP {}: {}  (budget {}, exposure {}, recovery-point skew {})",
            group.group,
            group.verdict,
            human_duration(Duration::from_secs_f64(group.rpo_budget_seconds)),
            secs(group.exposure_seconds),
            secs(group.recovery_point_skew_seconds),
        );
        let mut rows = vec![[
            "TARGET".to_string(),
            "KIND".to_string(),
            "STATUS".to_string(),
            "RECOVERY POINT".to_string(),
            "EXPOSURE".to_string(),
            "BUDGET".to_string(),
            // The evidence's age.
            "AGE".to_string(),
            "REASON".to_string(),
        ]];
        for t in &group.targets {
            rows.push([
                t.target.clone(),
                t.kind.clone(),
                if t.ready { "GO" } else { "NO-GO" }.to_string(),
                t.recovery_point
                    .as_deref()
                    .map(|rp| recovery_point_words(rp, today))
                    .unwrap_or_else(|| "unknown".to_string()),
                match (t.loss_window_seconds, verdict.mode.as_str()) {
                    (Some(window), "unplanned") => format!(
                        "{} (loss window {})",
                        secs(t.exposure_seconds),
                        secs(Some(window))
                    ),
                    _ => secs(t.exposure_seconds),
                },
                secs(Some(t.budget_seconds)),
                secs(t.evidence_age_seconds),
                // The most fundamental reason; all are listed below.
                t.reasons.first().cloned().unwrap_or_default(),
            ]);
        }
        write_columns(&mut out, &rows);
        let every: Vec<String> = group
            .reasons
            .iter()
            .filter(|_| group.targets.is_empty())
            .cloned()
            .chain(group.targets.iter().flat_map(|t| {
                t.reasons
                    .iter()
                    .map(move |reason| format!("{}: {reason}", t.target))
            }))
            .collect();
        if !every.is_empty() {
            let _ = writeln!(out, "  Reasons:");
            for reason in &every {
                write_wrapped(&mut out, "    - ", "      ", reason);
            }
        }
        render_notes(&mut out, group);
    }
    out
}

/// A recovery point as a person reads it: the time of day when it is of
/// the day the verdict was evaluated, else the date too (to the second).
fn recovery_point_words(rfc3339: &str, today: &str) -> String {
    let seconds = match rfc3339.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => rfc3339.to_string(),
    };
    match seconds.split_once('T') {
        Some((date, time)) if date == today => time.to_string(),
        Some((date, time)) => format!("{date} {time}"),
        None => seconds,
    }
}

/// `text` after `first`, wrapped at [`TABLE_WIDTH`] on spaces, each further
/// line after `rest`.
fn write_wrapped(out: &mut String, first: &str, rest: &str, text: &str) {
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split(' ') {
        let fits = line.chars().count() + 1 + word.chars().count() <= TABLE_WIDTH;
        if !empty && !fits {
            let _ = writeln!(out, "{}", line.trim_end());
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    let _ = writeln!(out, "{}", line.trim_end());
}

/// What a person should know besides the reasons: promotions, the loss
/// they took, the direction replication is measured in.
fn render_notes(out: &mut String, group: &crate::readiness::GroupJson) {
    let notes: Vec<String> = group
        .targets
        .iter()
        .flat_map(|t| {
            t.notes
                .iter()
                .map(move |note| format!("{}: {note}", t.target))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "  Notes:");
        for note in notes {
            let _ = writeln!(out, "    - {note}");
        }
    }
}

/// Rows as aligned columns, indented two spaces; the last column is not
/// padded, and is cut (with `…`) where the line would pass [`TABLE_WIDTH`]
/// (it keeps at least 16 characters).
fn write_columns<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let before_last: usize = 2 + widths[..N - 1].iter().map(|w| w + 2).sum::<usize>();
    let last_width = TABLE_WIDTH.saturating_sub(before_last).max(16);
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            if c == N - 1 {
                if cell.chars().count() > last_width {
                    line.extend(cell.chars().take(last_width - 1));
                    line.push('…');
                } else {
                    line.push_str(cell);
                }
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_own_reasons_carry_codes_beside_the_same_words() {
        let verdict = unreachable_verdict(
            Mode::Planned,
            "exporter at http://x cannot be reached: timed out".to_string(),
        );
        assert!(!verdict.ready);
        assert_eq!(verdict.schema_version, SCHEMA_VERSION);
        assert_eq!(
            verdict.reasons,
            ["exporter at http://x cannot be reached: timed out"]
        );
        assert_eq!(
            verdict.reason_details,
            [ReasonJson {
                code: "exporter_unavailable".to_string(),
                group: None,
                target: None,
                exporter: None,
                message: "exporter at http://x cannot be reached: timed out".to_string(),
            }]
        );
        assert!(render_table(&verdict)
            .contains("\n  - exporter at http://x cannot be reached: timed out\n"));

        // The table header names the exporter that computed the verdict, and
        // `check --prometheus` lists the exporters it read.
        let mut named = verdict_from_reasons(Mode::Planned, Vec::new());
        named.exporter = Some(crate::readiness::ExporterJson {
            instance: Some("dr".to_string()),
            region: Some("eu-central-1".to_string()),
            scrape_instance: None,
            verdict: None,
        });
        assert!(render_table(&named)
            .lines()
            .next()
            .unwrap()
            .ends_with(", exporter dr in eu-central-1)"));
        named.exporter = None;
        named.exporters = vec![crate::readiness::ExporterJson {
            instance: Some("dr".to_string()),
            region: None,
            scrape_instance: Some("10.0.3.4:9798".to_string()),
            verdict: Some("GO".to_string()),
        }];
        let table = render_table(&named);
        assert!(
            table.contains("\n  EXPORTER  REGION  SCRAPED AT     VERDICT\n  dr        -       10.0.3.4:9798  GO\n"),
            "{table}"
        );

        let go = verdict_from_reasons(Mode::Unplanned, Vec::new());
        assert!(go.ready);
        assert!(go.reason_details.is_empty());
    }

    #[test]
    fn the_table_fits_120_columns_with_one_reason_a_row_and_all_below() {
        let refused = "replica unreachable (connect: error connecting to server: Connection refused (os error 111))";
        let verdict: VerdictJson = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "verdict": "NO-GO", "ready": false, "mode": "planned",
            "evaluated_at": "2025-03-01T14:02:11.512Z", "evaluated_at_unix": 1740837731.5,
            "reasons": [], "groups": [{
                "group": "erp", "verdict": "NO-GO", "ready": false, "rpo_budget_seconds": 5.0,
                "exposure_seconds": 65.2, "recovery_point_skew_seconds": null,
                "reasons": [format!("erp-db-eu-central-1-primary: {refused}")],
                "targets": [{
                    "target": "erp-db-eu-central-1-primary", "kind": "postgres", "ready": false,
                    "recovery_point": "2025-03-01T14:01:06.300Z", "recovery_point_unix": 1740837666.3,
                    "exposure_seconds": 65.2, "budget_seconds": 5.0, "evidence_age_seconds": 65.2,
                    "replication_healthy": false,
                    "reasons": [
                        refused,
                        "evidence stale (last success 1m 5s ago: connect)",
                        "exposure 1m 5s exceeds budget 5s"
                    ]
                }, {
                    "target": "erp-files", "kind": "s3", "ready": true,
                    "recovery_point": "2025-02-28T23:59:58.000Z", "recovery_point_unix": 1740787198.0,
                    "exposure_seconds": 1.5, "budget_seconds": 900.0, "evidence_age_seconds": 30.0,
                    "replication_healthy": true, "reasons": []
                }]
            }]
        }))
        .unwrap();
        let table = render_table(&verdict);
        for line in table.lines() {
            assert!(
                line.chars().count() <= TABLE_WIDTH,
                "{} chars: {line}\n{table}",
                line.chars().count()
            );
        }
        let row = table
            .lines()
            .find(|l| l.starts_with("  erp-db-eu-central-1-primary "))
            .unwrap();
        // One reason in the row (the first), its time of day, durations in words.
        assert!(
            row.contains("NO-GO   14:01:06Z ") && row.contains(" 1m 5s "),
            "{row}"
        );
        assert!(row.contains("  replica unreachable (c"), "{row}");
        assert!(
            !row.contains("evidence stale") && !row.contains("exceeds"),
            "{row}"
        );
        // Another day's recovery point carries its date.
        assert!(table.contains("2025-02-28 23:59:58Z"), "{table}");
        // Every reason in full below the table, each once.
        let below = table.split("  Reasons:\n").nth(1).unwrap();
        let unwrapped = below.split("\n      ").collect::<Vec<_>>().join(" ");
        for reason in [
            refused,
            "evidence stale (last success 1m 5s ago: connect)",
            "exposure 1m 5s exceeds budget 5s",
        ] {
            assert!(
                unwrapped.contains(&format!("- erp-db-eu-central-1-primary: {reason}\n")),
                "{reason} in:\n{table}"
            );
            assert_eq!(
                table.matches(&reason[..16]).count(),
                1 + usize::from(reason == refused),
                "{table}"
            );
        }
    }
}
