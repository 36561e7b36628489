//! The HTTP server (hyper): `/metrics` (or the configured telemetry path),
//! `/failover-readiness`, the HTML board at `/`, `/-/healthy` and `/-/ready`.
//!
//! Every answer is computed from the latest snapshot; no request waits on a
//! probe.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::board;
use crate::config::Config;
use crate::metrics;
use crate::readiness::{evaluate, Mode};
use crate::self_metrics::AwsCallCounters;
use crate::store::Store;

/// What request handlers read.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub telemetry_path: String,
    /// The counters the daemon's AWS probes count in, for `/metrics`.
    pub aws_calls: Arc<AwsCallCounters>,
}

/// Serves until `shutdown` completes; then closes every open connection
/// (keep-alive ones included), so a stopped exporter stops answering.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: log, breathe, go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

fn handle(state: &AppState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
    }
    let now = SystemTime::now();
    let path = req.uri().path();
    let query = parse_query(req.uri().query().unwrap_or(""));
    if path == state.telemetry_path {
        let body = metrics::render(
            &state.config,
            &state.store.snapshot(),
            &state.aws_calls,
            now,
        );
        return respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            body,
        );
    }
    match path {
        "/failover-readiness" => readiness(state, &query, now),
        "/" => {
            let mode = match query.get("mode").map(|m| m.parse::<Mode>()) {
                None => Mode::Planned,
                Some(Ok(mode)) => mode,
                Some(Err(problem)) => {
                    return text(StatusCode::BAD_REQUEST, &format!("{problem}\n"))
                }
            };
            let verdict = evaluate(&state.config, &state.store.snapshot(), mode, now, None);
            respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                board::render(&verdict, &state.telemetry_path),
            )
        }
        "/-/healthy" => text(StatusCode::OK, "Healthy\n"),
        "/-/ready" => {
            if state.store.snapshot().first_round_done() {
                text(StatusCode::OK, "Ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: the first poll round is not done\n",
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try / , /failover-readiness or the telemetry path\n",
        ),
    }
}

fn readiness(
    state: &AppState,
    query: &HashMap<String, String>,
    now: SystemTime,
) -> Response<Full<Bytes>> {
    let mode = match query.get("mode").map(|m| m.parse::<Mode>()) {
        None => Mode::Planned,
        Some(Ok(mode)) => mode,
        Some(Err(problem)) => return json_error(StatusCode::BAD_REQUEST, &problem),
    };
    let group = query
        .get("group")
        .filter(|g| !g.is_empty())
        .map(String::as_str);
    if let Some(name) = group {
        if state.config.group(name).is_none() {
            let known: Vec<&str> = state
                .config
                .groups
                .iter()
                .map(|g| g.name.as_str())
                .collect();
            return json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "unknown group `{name}`; configured groups: {}",
                    known.join(", ")
                ),
            );
        }
    }
    let verdict = evaluate(&state.config, &state.store.snapshot(), mode, now, group);
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(&verdict.to_json()).unwrap_or_default();
    respond(status, "application/json", body + "\n")
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "schema_version": crate::readiness::SCHEMA_VERSION,
        "verdict": "NO-GO",
        "ready": false,
        "error": message,
    });
    respond(status, "application/json", body.to_string() + "\n")
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

/// `a=1&b=x%20y` into a map; later keys win.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query("group=erp%2Dprod&mode=planned&x");
        assert_eq!(q["group"], "erp-prod");
        assert_eq!(q["mode"], "planned");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41"), "A");
    }
}
