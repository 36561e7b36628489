//! A fault-injecting HTTP proxy in front of the AWS emulator, so tests can
//! lose a region the way the recovery region's exporter sees a real region
//! loss: every call signed for that region goes unanswered, the others are
//! answered as before.
//!
//! [`RegionProxy::start`] listens on a free loopback port and forwards every
//! request to the upstream (moto). The region of a request is the one in its
//! SigV4 credential scope, `Authorization: AWS4-HMAC-SHA256
//! Credential=AKID/20261201/eu-west-1/rds/aws4_request, ...`
//! ([`signed_scope`]), which is also how moto itself picks the region. At
//! run time a region can be
//! - **blackholed** ([`RegionFault::Blackhole`]): the request is read and
//!   never answered (the connection stays open), as a partitioned region
//!   looks: the client's own timeout ends the call;
//! - **refused** ([`RegionFault::Refuse`]): the connection is closed without
//!   an answer, as an endpoint that is down looks;
//!
//! and restored again. Every request is counted per (region, service), so a
//! test can assert which regions a probe asked ([`RegionProxy::requests`]).
//!
//! Calls moto lacks (EFS replication configurations, ElastiCache global
//! datastores) can be answered with recorded responses in the shapes AWS
//! documents ([`Recorded`]), per region when the region's answer differs; a
//! lost region answers nothing, recorded or not. Dropping the proxy stops
//! it and every connection it holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// How a lost region fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionFault {
    /// Accept and read the request, never answer.
    Blackhole,
    /// Close the connection without an answer.
    Refuse,
}

/// A canned answer for requests whose path or body contains `marker`
/// (`Action=DescribeGlobalReplicationGroups`, `/2015-02-01/file-systems/
/// replication-configurations`), signed for `region` (any region if `None`).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub region: Option<String>,
    pub marker: String,
    pub content_type: String,
    pub body: String,
}

impl Recorded {
    /// A JSON answer (the EFS API's protocol).
    pub fn json(region: Option<&str>, marker: &str, body: impl Into<String>) -> Recorded {
        Recorded {
            region: region.map(str::to_string),
            marker: marker.to_string(),
            content_type: "application/json".to_string(),
            body: body.into(),
        }
    }

    /// An XML answer (the query protocol of ElastiCache and RDS).
    pub fn xml(region: Option<&str>, marker: &str, body: impl Into<String>) -> Recorded {
        Recorded {
            content_type: "text/xml".to_string(),
            ..Recorded::json(region, marker, body)
        }
    }
}

#[derive(Default)]
struct ProxyState {
    lost: HashMap<String, RegionFault>,
    requests: HashMap<(String, String), u64>,
    recorded: Vec<Recorded>,
}

/// The proxy, listening on 127.0.0.1.
pub struct RegionProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RegionProxy {
    fn drop(&mut self) {
        // The accept loop owns every connection's task (a JoinSet): aborting
        // it ends the held, blackholed ones too.
        self.task.abort();
    }
}

/// The region and service of a SigV4 `Authorization` header's credential
/// scope, or `None` for a request that is not signed that way.
pub fn signed_scope(authorization: &str) -> Option<(String, String)> {
    let scope = authorization
        .split("Credential=")
        .nth(1)?
        .split([',', ' '])
        .next()?;
    // AKID/DATE/REGION/SERVICE/aws4_request
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.len() == 5 && parts[4] == "aws4_request" && !parts[2].is_empty())
        .then(|| (parts[2].to_string(), parts[3].to_string()))
}

impl RegionProxy {
    /// Starts forwarding to `upstream` (`http://127.0.0.1:PORT`) on a free
    /// loopback port.
    pub async fn start(upstream: &str) -> RegionProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the region proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client for the proxy");
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // Finished connections are reaped as new ones arrive.
                while connections.try_join_next().is_some() {}
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (state, client, upstream) =
                            (state.clone(), client.clone(), upstream.clone());
                        async move { handle(request, &state, &client, &upstream).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RegionProxy { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`: the `endpoint_url` of targets behind it.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, every request signed for `region` fails with `fault`.
    pub fn lose(&self, region: &str, fault: RegionFault) {
        self.lock().lost.insert(region.to_string(), fault);
    }

    /// `region` answers again (requests already held stay unanswered).
    pub fn restore(&self, region: &str) {
        self.lock().lost.remove(region);
    }

    /// Requests signed for `region` and `service` (the SigV4 signing name:
    /// `rds`, `monitoring` for CloudWatch, `s3`, `sqs`, `elasticfilesystem`,
    /// `elasticache`) since the start or the last [`RegionProxy::reset_counts`],
    /// lost ones included.
    pub fn requests(&self, region: &str, service: &str) -> u64 {
        self.lock()
            .requests
            .get(&(region.to_string(), service.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every (region, service) asked so far, with its count, sorted.
    pub fn all_requests(&self) -> Vec<((String, String), u64)> {
        let mut all: Vec<_> = self
            .lock()
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all
    }

    pub fn reset_counts(&self) {
        self.lock().requests.clear();
    }

    /// Answers matching requests with `recorded` from now on, replacing an
    /// earlier answer for the same marker and region.
    pub fn record(&self, recorded: Recorded) {
        let mut state = self.lock();
        state
            .recorded
            .retain(|r| !(r.marker == recorded.marker && r.region == recorded.region));
        state.recorded.push(recorded);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a request was not answered (`Refuse`): hyper closes the connection.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("region refused by the test")
    }
}

impl std::error::Error for Refused {}

async fn handle(
    request: Request<Incoming>,
    state: &Mutex<ProxyState>,
    client: &reqwest::Client,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, Refused> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (region, service) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(signed_scope)
        .unwrap_or_else(|| ("unsigned".to_string(), "unsigned".to_string()));
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let (fault, recorded) = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        *state.requests.entry((region.clone(), service)).or_default() += 1;
        let recorded = state
            .recorded
            .iter()
            .filter(|r| path.contains(&r.marker) || text.contains(&r.marker))
            // A region's own answer wins over an any-region one.
            .max_by_key(|r| match &r.region {
                Some(own) if *own == region => 2,
                None => 1,
                Some(_) => 0,
            })
            .filter(|r| r.region.as_ref().is_none_or(|own| *own == region))
            .cloned();
        (state.lost.get(&region).copied(), recorded)
    };
    match fault {
        Some(RegionFault::Blackhole) => std::future::pending().await,
        Some(RegionFault::Refuse) => return Err(Refused),
        None => {}
    }
    if let Some(r) = recorded {
        return Ok(Response::builder()
            .header("content-type", r.content_type)
            .header("x-amzn-requestid", "recorded")
            .body(Full::new(Bytes::from(r.body)))
            .expect("a recorded response"));
    }
    let mut forward = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != "host" {
            forward = forward.header(name, value);
        }
    }
    let Ok(answer) = forward.body(body).send().await else {
        // The upstream itself is down: the client sees the same.
        return Err(Refused);
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "content-length" && name != "connection" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    Ok(response
        .body(Full::new(bytes))
        .expect("a forwarded response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_read_from_the_credential_scope() {
        let header = "AWS4-HMAC-SHA256 Credential=testing/20261201/eu-west-1/rds/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(
            signed_scope(header),
            Some(("eu-west-1".to_string(), "rds".to_string()))
        );
        let s3 = "AWS4-HMAC-SHA256 Credential=AKID/20261201/us-west-2/s3/aws4_request,SignedHeaders=host,Signature=x";
        assert_eq!(
            signed_scope(s3),
            Some(("us-west-2".to_string(), "s3".to_string()))
        );
        assert_eq!(signed_scope("Basic dXNlcjpwYXNz"), None);
        assert_eq!(signed_scope("AWS4-HMAC-SHA256 Credential=a/b/c"), None);
    }
}
