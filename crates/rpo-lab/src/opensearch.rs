//! A local stand-in for an OpenSearch follower (and leader) cluster that
//! serves the cross-cluster-replication answers, for contract tests and the
//! demo. No OpenSearch can run on the machines this project is built on, so
//! the `opensearch` kind is contract-tested against these bodies, not
//! lab-tested against a real cluster.
//!
//! The bodies follow the OpenSearch documentation (documentation-website,
//! `_tuning-your-cluster/replication-plugin/api.md` and `getting-started.md`)
//! and, for what it shows none of, the replication plugin's source
//! (opensearch-project/cross-cluster-replication): the status of a running
//! replication is its first shard's state, `syncing_details` and
//! `bootstrap_details` aggregate the shards that replay and that copy, and
//! `verbose=true` lists every primary shard
//! (`TransportReplicationStatusAction.kt`, `ReplicationStatusResponse.kt`,
//! `ShardInfoResponse.kt`), so an index can be served shard by shard
//! ([`IndexState::Shards`]).
//!
//! Access control as the real thing does it: HTTP basic auth (401), the
//! Security plugin refusing an action by its name (403 `security_exception`,
//! [`OpenSearchContract::deny_action`], with the plugins' action names), and
//! an Amazon OpenSearch Service domain with IAM access that verifies every
//! request's AWS SigV4 signature ([`OpenSearchContract::require_sigv4`],
//! checked by [`sigv4`]) and refuses a missing or wrong one with AWS's 403.
//!
//! The server listens on 127.0.0.1 on a free port, one thread per
//! connection, `Connection: close`. Each index has a switchable
//! [`IndexState`]; the whole server can also hang (accept and never
//! answer). It stores documents, so one server can play the leader and the
//! follower of a heartbeat: a document written to the heartbeat's leader
//! index is copied to its follower index while replication of heartbeats is
//! on. Dropping the server stops it.

pub mod sigv4;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

pub use sigv4::SigV4Key;

/// The replication plugin's action behind `GET _plugins/_replication/<index>/_status`
/// (`ReplicationStatusAction.kt`).
pub const STATUS_ACTION: &str = "indices:admin/plugins/replication/index/status_check";
/// ... behind `GET _plugins/_replication/follower_stats` (`FollowerStatsAction.kt`).
pub const FOLLOWER_STATS_ACTION: &str = "indices:admin/plugins/replication/follower/stats";
/// OpenSearch's document read and write actions.
pub const GET_ACTION: &str = "indices:data/read/get";
pub const INDEX_ACTION: &str = "indices:data/write/index";

/// What the follower says about one index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexState {
    /// SYNCING with leader and follower checkpoints equal.
    InStep {
        checkpoint: i64,
    },
    /// SYNCING with the follower behind.
    Behind {
        leader: i64,
        follower: i64,
    },
    /// One shard, still copying the leader's files.
    Bootstrapping {
        percent: f64,
    },
    /// Shard by shard (`[index][0]`, `[index][1]`, ...), answered as the
    /// plugin aggregates them: the status is the first shard's.
    Shards(Vec<Shard>),
    Paused,
    Failed,
    /// `{"status":"REPLICATION NOT IN PROGRESS"}`; also the answer for an
    /// index the server does not know, as the real plugin gives.
    NotInProgress,
    /// HTTP 404 `index_not_found_exception`.
    NotFound,
    /// HTTP 200 with a truncated body.
    Malformed,
}

/// One primary shard of a follower index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shard {
    /// Replaying: the leader's and the follower's checkpoints.
    Syncing { leader: i64, follower: i64 },
    /// Copying the leader's files (of 1000 bytes).
    Bootstrapping { percent: f64 },
}

impl IndexState {
    /// The shards of an index that is being replicated.
    fn shards(&self) -> Option<Vec<Shard>> {
        match self {
            IndexState::InStep { checkpoint } => Some(vec![Shard::Syncing {
                leader: *checkpoint,
                follower: *checkpoint,
            }]),
            IndexState::Behind { leader, follower } => Some(vec![Shard::Syncing {
                leader: *leader,
                follower: *follower,
            }]),
            IndexState::Bootstrapping { percent } => {
                Some(vec![Shard::Bootstrapping { percent: *percent }])
            }
            IndexState::Shards(shards) => Some(shards.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    indices: BTreeMap<String, IndexState>,
    /// `Authorization` header value required, if any.
    required_auth: Option<String>,
    hang: bool,
    /// (index, id) -> document source.
    docs: BTreeMap<(String, String), String>,
    /// Leader index -> follower index for heartbeat documents.
    heartbeat_route: Option<(String, String)>,
    replicating_heartbeats: bool,
    /// The leader cluster cannot be reached (its region lost).
    leader_lost: bool,
    /// Actions the Security plugin refuses.
    denied_actions: Vec<String>,
    /// The IAM access of an Amazon OpenSearch Service domain: every request
    /// must carry a valid SigV4 signature for this key.
    sigv4: Option<SigV4Key>,
    requests: u64,
}

/// The contract server. See the module documentation.
#[derive(Debug)]
pub struct OpenSearchContract {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OpenSearchContract {
    /// Starts a server with no index and no authentication.
    pub fn start() -> io::Result<OpenSearchContract> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            replicating_heartbeats: true,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (state.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name(format!("opensearch-contract-{port}"))
            .spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if shared.lock().unwrap_or_else(|e| e.into_inner()).hang {
                                held.push(stream);
                                continue;
                            }
                            let shared = shared.clone();
                            let _ = thread::Builder::new()
                                .name("opensearch-contract-conn".into())
                                .spawn(move || {
                                    let _ = serve(stream, &shared);
                                });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                drop(held);
            })?;
        Ok(OpenSearchContract {
            port,
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn with<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sets what the follower says about `index`.
    pub fn set_index(&self, index: &str, state: IndexState) {
        self.with(|s| s.indices.insert(index.to_string(), state));
    }

    /// Forgets an index (it then answers REPLICATION NOT IN PROGRESS).
    pub fn remove_index(&self, index: &str) {
        self.with(|s| s.indices.remove(index));
    }

    /// Demands HTTP basic auth with these credentials (401 otherwise).
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        let header = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        self.with(|s| s.required_auth = Some(header));
    }

    /// The Security plugin refuses `action` (e.g. [`STATUS_ACTION`]) to
    /// every user from now on, with its 403 naming the action.
    pub fn deny_action(&self, action: &str) {
        self.with(|s| s.denied_actions.push(action.to_string()));
    }

    /// Plays an Amazon OpenSearch Service domain with IAM access: every
    /// request must be signed with AWS SigV4 for `key`; a missing, expired
    /// or wrong signature gets AWS's 403.
    pub fn require_sigv4(&self, key: SigV4Key) {
        self.with(|s| s.sigv4 = Some(key));
    }

    /// From now on, accept connections and never answer.
    pub fn set_hang(&self, hang: bool) {
        self.with(|s| s.hang = hang);
    }

    /// Copies documents written to `leader_index` into `follower_index`
    /// while [`set_replicating_heartbeats`](Self::set_replicating_heartbeats) is on (the default).
    pub fn route_heartbeats(&self, leader_index: &str, follower_index: &str) {
        self.with(|s| {
            s.heartbeat_route = Some((leader_index.to_string(), follower_index.to_string()))
        });
    }

    pub fn set_replicating_heartbeats(&self, on: bool) {
        self.with(|s| s.replicating_heartbeats = on);
    }

    /// Plays the leader cluster lost (its region gone): the status of a
    /// running replication then fails as the plugin fails it (its status
    /// action asks the leader's shards through the remote-cluster client,
    /// and any exception becomes HTTP 500 `failed to fetch replication
    /// status`, `TransportReplicationStatusAction.kt`), heartbeat documents
    /// stop replicating, and writes to the heartbeat's leader index are
    /// refused with 503 (the leader is another cluster in reality: its
    /// endpoint would not answer at all). The follower's own answers
    /// (follower_stats, documents, a stopped replication's status) stay.
    pub fn set_leader_lost(&self, lost: bool) {
        self.with(|s| s.leader_lost = lost);
    }

    /// The stored source of a document, if any.
    pub fn document(&self, index: &str, id: &str) -> Option<String> {
        self.with(|s| s.docs.get(&(index.to_string(), id.to_string())).cloned())
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.with(|s| s.requests)
    }
}

impl Drop for OpenSearchContract {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    /// The path and query as they came over the wire (still encoded).
    path: String,
    query: String,
    /// Header names in lower case, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &TcpStream) -> io::Result<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut length = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn respond(mut stream: &TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let extra = if status == 401 {
        "WWW-Authenticate: Basic realm=\"OpenSearch Security\"\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn serve(stream: TcpStream, shared: &Mutex<State>) -> io::Result<()> {
    let request = read_request(&stream)?;
    let (status, content_type, body) = {
        let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
        state.requests += 1;
        answer(&mut state, &request)
    };
    respond(&stream, status, content_type, &body)
}

const JSON: &str = "application/json; charset=UTF-8";

fn answer(state: &mut State, request: &Request) -> (u16, &'static str, String) {
    if let Some(key) = &state.sigv4 {
        let wire = sigv4::WireRequest {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &request.headers,
            body: &request.body,
        };
        if let Err(refusal) = sigv4::verify(key, &wire, SystemTime::now()) {
            return (403, JSON, refusal);
        }
    }
    if let Some(required) = &state.required_auth {
        if request.header("authorization") != Some(required.as_str()) {
            // What the security plugin answers to bad credentials.
            return (401, "text/plain; charset=UTF-8", "Unauthorized".to_string());
        }
    }
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let verbose = request.query.split('&').any(|kv| kv == "verbose=true");
    let action = match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["_plugins", "_replication", "follower_stats"]) => Some(FOLLOWER_STATS_ACTION),
        ("GET", ["_plugins", "_replication", _, "_status"]) => Some(STATUS_ACTION),
        ("PUT" | "POST", [_, "_doc", _]) => Some(INDEX_ACTION),
        ("GET", [_, "_doc", _]) => Some(GET_ACTION),
        _ => None,
    };
    if let Some(action) = action.filter(|a| state.denied_actions.iter().any(|d| d == a)) {
        return (403, JSON, security_exception(action));
    }
    let body = String::from_utf8_lossy(&request.body).into_owned();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["_plugins", "_replication", "follower_stats"]) => {
            (200, JSON, follower_stats(state))
        }
        ("GET", ["_plugins", "_replication", index, "_status"]) => {
            let index = index.to_string();
            match state.indices.get(&index) {
                Some(IndexState::NotFound) => (404, JSON, not_found(&index)),
                Some(s) if state.leader_lost && s.shards().is_some() => (
                    500,
                    JSON,
                    replication_exception("failed to fetch replication status"),
                ),
                Some(s) => (200, JSON, status_body(&index, s, verbose)),
                None => (
                    200,
                    JSON,
                    status_body(&index, &IndexState::NotInProgress, verbose),
                ),
            }
        }
        ("PUT" | "POST", [index, "_doc", _])
            if state.leader_lost
                && state
                    .heartbeat_route
                    .as_ref()
                    .is_some_and(|(leader, _)| leader == index) =>
        {
            (
                503,
                JSON,
                r#"{"message":"leader cluster lost"}"#.to_string(),
            )
        }
        ("PUT" | "POST", [index, "_doc", id]) => {
            let (index, id) = (index.to_string(), id.to_string());
            state.docs.insert((index.clone(), id.clone()), body.clone());
            if let Some((leader, follower)) = &state.heartbeat_route {
                if *leader == index && state.replicating_heartbeats {
                    let follower = follower.clone();
                    state.docs.insert((follower, id.clone()), body);
                }
            }
            (
                201,
                JSON,
                format!(
                    r#"{{"_index":"{index}","_id":"{id}","_version":1,"result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"_seq_no":0,"_primary_term":1}}"#
                ),
            )
        }
        ("GET", [index, "_doc", id]) => {
            match state.docs.get(&(index.to_string(), id.to_string())) {
                Some(source) => (
                    200,
                    JSON,
                    format!(
                        r#"{{"_index":"{index}","_id":"{id}","_version":1,"_seq_no":0,"_primary_term":1,"found":true,"_source":{source}}}"#
                    ),
                ),
                None => (
                    404,
                    JSON,
                    format!(r#"{{"_index":"{index}","_id":"{id}","found":false}}"#),
                ),
            }
        }
        _ => (
            400,
            JSON,
            format!(
                r#"{{"error":"no handler found for uri [{}] and method [{}]"}}"#,
                request.path, request.method
            ),
        ),
    }
}

/// The Security plugin's refusal of an action (PrivilegesEvaluator's
/// "no permissions for [...]", as OpenSearch renders a security_exception).
fn security_exception(action: &str) -> String {
    let reason = format!(
        "no permissions for [{action}] and User [name=rpo-monitor, backend_roles=[], requestedTenant=null]"
    );
    serde_json::json!({
        "error": {
            "root_cause": [{ "type": "security_exception", "reason": reason }],
            "type": "security_exception",
            "reason": reason,
        },
        "status": 403,
    })
    .to_string()
}

/// An exception of the replication plugin (`ReplicationException`, an
/// `OpenSearchException`: HTTP 500, type `replication_exception`), as
/// OpenSearch renders it.
fn replication_exception(reason: &str) -> String {
    serde_json::json!({
        "error": {
            "root_cause": [{ "type": "replication_exception", "reason": reason }],
            "type": "replication_exception",
            "reason": reason,
        },
        "status": 500,
    })
    .to_string()
}

fn not_found(index: &str) -> String {
    format!(
        r#"{{"error":{{"root_cause":[{{"type":"index_not_found_exception","reason":"no such index [{index}]","index":"{index}","resource.id":"{index}","resource.type":"index_or_alias","index_uuid":"_na_"}}],"type":"index_not_found_exception","reason":"no such index [{index}]","index":"{index}","resource.id":"{index}","resource.type":"index_or_alias","index_uuid":"_na_"}},"status":404}}"#
    )
}

/// The status body of one index, pretty-printed like the documentation's.
fn status_body(index: &str, state: &IndexState, verbose: bool) -> String {
    let head = |status: &str, reason: &str| {
        serde_json::json!({
            "status": status,
            "reason": reason,
            "leader_alias": "leader-cluster",
            "leader_index": index,
            "follower_index": index,
        })
    };
    let body = match state {
        IndexState::Paused => head("PAUSED", "User initiated"),
        IndexState::Failed => head(
            "FAILED",
            "no permissions for [indices:data/read/plugins/replication/file_chunk] and associated roles",
        ),
        IndexState::NotInProgress | IndexState::NotFound => {
            serde_json::json!({ "status": "REPLICATION NOT IN PROGRESS" })
        }
        IndexState::Malformed => {
            return "{\n  \"status\" : \"SYNCING\",\n  \"syncing_details\" : {\n    \"leader_checkp".to_string()
        }
        replicated => {
            let shards = replicated.shards().unwrap_or_default();
            running_status(index, &shards, verbose, head)
        }
    };
    serde_json::to_string_pretty(&body).unwrap_or_default()
}

/// A running replication's answer, aggregated as
/// `TransportReplicationStatusAction` does: the status is the first shard's;
/// `syncing_details` sums the replaying shards' checkpoints (and sequence
/// numbers), `bootstrap_details` the copying shards' bytes and files with
/// their percentages averaged, the earliest start and the longest running
/// time; `shard_replication_details` only when verbose.
fn running_status(
    index: &str,
    shards: &[Shard],
    verbose: bool,
    head: impl Fn(&str, &str) -> serde_json::Value,
) -> serde_json::Value {
    let first = match shards.first() {
        Some(Shard::Bootstrapping { .. }) => "BOOTSTRAPPING",
        _ => "SYNCING",
    };
    let mut body = head(first, "User initiated");
    let restore = |percent: f64| {
        let recovered = (percent * 10.0).round() as i64;
        serde_json::json!({
            "bytes_total": 1000,
            "bytes_recovered": recovered,
            "bytes_percent": percent,
            "files_total": 10,
            "files_recovered": recovered / 100,
            "files_percent": (recovered / 100) as f64 * 10.0,
            "start_time": 1_700_000_000_000_i64,
            "running_time": 1200,
        })
    };
    let replay = |leader: i64, follower: i64| {
        serde_json::json!({
            "leader_checkpoint": leader,
            "follower_checkpoint": follower,
            "seq_no": follower + 1,
        })
    };
    let (mut leader_sum, mut follower_sum, mut seq_sum, mut replaying) = (0, 0, 0, 0);
    let (mut copying, mut percent_mean, mut recovered_sum) = (0, 0.0, 0);
    let mut details = Vec::new();
    for (n, shard) in shards.iter().enumerate() {
        let shard_id = format!("[{index}][{n}]");
        match *shard {
            Shard::Syncing { leader, follower } => {
                leader_sum += leader;
                follower_sum += follower;
                seq_sum += follower + 1;
                replaying += 1;
                details.push(serde_json::json!({
                    "shard_id": shard_id,
                    "syncing_task_details": replay(leader, follower),
                }));
            }
            Shard::Bootstrapping { percent } => {
                percent_mean = (copying as f64 * percent_mean + percent) / (copying as f64 + 1.0);
                copying += 1;
                recovered_sum += (percent * 10.0).round() as i64;
                details.push(serde_json::json!({
                    "shard_id": shard_id,
                    "bootstrap_task_details": restore(percent),
                }));
            }
        }
    }
    let map = body.as_object_mut().expect("head is an object");
    if replaying > 0 {
        map.insert(
            "syncing_details".into(),
            serde_json::json!({
                "leader_checkpoint": leader_sum,
                "follower_checkpoint": follower_sum,
                "seq_no": seq_sum,
            }),
        );
    }
    if copying > 0 {
        map.insert(
            "bootstrap_details".into(),
            serde_json::json!({
                "bytes_total": 1000 * copying,
                "bytes_recovered": recovered_sum,
                "bytes_percent": percent_mean,
                "files_total": 10 * copying,
                "files_recovered": recovered_sum / 100,
                "files_percent": percent_mean,
                "start_time": 1_700_000_000_000_i64,
                "running_time": 1200,
            }),
        );
    }
    if verbose {
        map.insert("shard_replication_details".into(), details.into());
    }
    body
}

fn follower_stats(state: &State) -> String {
    let mut syncing = Vec::new();
    let (mut bootstrapping, mut paused, mut failed) = (0, 0, 0);
    for (index, s) in &state.indices {
        match (s, s.shards()) {
            (IndexState::Paused, _) => paused += 1,
            (IndexState::Failed, _) => failed += 1,
            // Shard tasks (and with them index_stats) start once the
            // whole index is copied; until then the index counts as
            // bootstrapping (FollowerStatsResponse).
            (_, Some(shards))
                if shards
                    .iter()
                    .any(|s| matches!(s, Shard::Bootstrapping { .. })) =>
            {
                bootstrapping += 1
            }
            (_, Some(shards)) => {
                let (mut leader, mut follower) = (0, 0);
                for shard in shards {
                    if let Shard::Syncing {
                        leader: l,
                        follower: f,
                    } = shard
                    {
                        leader += l;
                        follower += f;
                    }
                }
                syncing.push((index, leader, follower));
            }
            _ => {}
        }
    }
    let index_stats: Vec<String> = syncing
        .iter()
        .map(|(index, leader, follower)| {
            format!(
                r#""{index}":{{"operations_written":{follower},"operations_read":{follower},"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":{follower},"leader_checkpoint":{leader},"total_write_time_millis":935}}"#
            )
        })
        .collect();
    format!(
        r#"{{"num_syncing_indices":{},"num_bootstrapping_indices":{bootstrapping},"num_paused_indices":{paused},"num_failed_indices":{failed},"num_shard_tasks":{},"num_index_tasks":{},"operations_written":0,"operations_read":0,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":0,"leader_checkpoint":0,"total_write_time_millis":0,"index_stats":{{{}}}}}"#,
        syncing.len(),
        syncing.len(),
        syncing.len() + bootstrapping,
        index_stats.join(",")
    )
}

/// Standard base64 (RFC 4648, with padding), for basic-auth headers.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpo_exporter::kinds::opensearch::{parse_follower_stats, parse_status, ReplicationStatus};

    #[test]
    fn base64_matches_the_rfc_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
    }

    #[test]
    fn served_bodies_parse_as_the_probe_expects() {
        for (state, expected) in [
            (
                IndexState::InStep { checkpoint: 5 },
                ReplicationStatus::Syncing,
            ),
            (
                IndexState::Behind {
                    leader: 9,
                    follower: 5,
                },
                ReplicationStatus::Syncing,
            ),
            (IndexState::Paused, ReplicationStatus::Paused),
            (IndexState::Failed, ReplicationStatus::Failed),
            (
                IndexState::Bootstrapping { percent: 42.0 },
                ReplicationStatus::Bootstrapping,
            ),
            (IndexState::NotInProgress, ReplicationStatus::NotInProgress),
        ] {
            let parsed = parse_status(&status_body("ix", &state, true)).unwrap();
            assert_eq!(parsed.status, expected, "{state:?}");
        }
        assert!(parse_status(&status_body("ix", &IndexState::Malformed, true)).is_err());
        // Shard 0 syncing, shard 1 copying: SYNCING as the plugin reports
        // it, bootstrapping as the probe judges it, per shard when verbose
        // and from bootstrap_details when not.
        let partial = IndexState::Shards(vec![
            Shard::Syncing {
                leader: 7,
                follower: 7,
            },
            Shard::Bootstrapping { percent: 40.0 },
        ]);
        for verbose in [true, false] {
            let parsed = parse_status(&status_body("ix", &partial, verbose)).unwrap();
            assert_eq!(parsed.status, ReplicationStatus::Syncing);
            assert_eq!(parsed.state(), ReplicationStatus::Bootstrapping);
            assert_eq!(parsed.shards.len(), if verbose { 2 } else { 0 });
            assert_eq!(parsed.copy_ratio(), Some(0.4));
        }
        let mut state = State::default();
        state
            .indices
            .insert("a".into(), IndexState::InStep { checkpoint: 1 });
        state.indices.insert("b".into(), IndexState::Paused);
        let stats = parse_follower_stats(&follower_stats(&state)).unwrap();
        assert_eq!(stats.indices, ["a"]);
        assert_eq!(stats.paused, 1);
    }
}
