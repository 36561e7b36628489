//! A local stand-in for an OpenSearch follower (and leader) cluster that
//! serves the documented cross-cluster-replication answers, for contract
//! tests and the demo. No OpenSearch can run on the machines this project is
//! built on, so the `opensearch` kind is contract-tested against these
//! bodies, not lab-tested against a real cluster.
//!
//! The bodies follow the OpenSearch documentation (documentation-website,
//! `_tuning-your-cluster/replication-plugin/api.md` and `getting-started.md`);
//! where the documentation shows none (FAILED, the verbose shard details,
//! the 404), they follow the replication plugin's source
//! (`TransportReplicationStatusAction.kt`, `ShardInfoResponse.kt`) and the
//! standard OpenSearch error shape.
//!
//! The server listens on 127.0.0.1 on a free port, one thread per
//! connection, `Connection: close`. Each index has a switchable
//! [`IndexState`]; the whole server can demand basic auth, or hang (accept
//! and never answer). It also stores documents, so one server can play the
//! leader and the follower of a heartbeat: a document written to the
//! heartbeat's leader index is copied to its follower index while
//! replication of heartbeats is on. Dropping the server stops it.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

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
    Bootstrapping {
        percent: f64,
    },
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
    path: String,
    query: String,
    authorization: Option<String>,
    body: String,
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
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim().to_string();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        query,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(mut stream: &TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
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
    if let Some(required) = &state.required_auth {
        if request.authorization.as_deref() != Some(required.as_str()) {
            // What the security plugin answers to bad credentials.
            return (401, "text/plain; charset=UTF-8", "Unauthorized".to_string());
        }
    }
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let verbose = request.query.split('&').any(|kv| kv == "verbose=true");
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["_plugins", "_replication", "follower_stats"]) => {
            (200, JSON, follower_stats(state))
        }
        ("GET", ["_plugins", "_replication", index, "_status"]) => {
            let index = index.to_string();
            match state.indices.get(&index) {
                Some(IndexState::NotFound) => (404, JSON, not_found(&index)),
                Some(s) => (200, JSON, status_body(&index, s, verbose)),
                None => (
                    200,
                    JSON,
                    status_body(&index, &IndexState::NotInProgress, verbose),
                ),
            }
        }
        ("PUT" | "POST", [index, "_doc", id]) => {
            let (index, id) = (index.to_string(), id.to_string());
            state
                .docs
                .insert((index.clone(), id.clone()), request.body.clone());
            if let Some((leader, follower)) = &state.heartbeat_route {
                if *leader == index && state.replicating_heartbeats {
                    let follower = follower.clone();
                    state
                        .docs
                        .insert((follower, id.clone()), request.body.clone());
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

fn not_found(index: &str) -> String {
    format!(
        r#"{{"error":{{"root_cause":[{{"type":"index_not_found_exception","reason":"no such index [{index}]","index":"{index}","resource.id":"{index}","resource.type":"index_or_alias","index_uuid":"_na_"}}],"type":"index_not_found_exception","reason":"no such index [{index}]","index":"{index}","resource.id":"{index}","resource.type":"index_or_alias","index_uuid":"_na_"}},"status":404}}"#
    )
}

/// The status body of one index, pretty-printed like the documentation's.
fn status_body(index: &str, state: &IndexState, verbose: bool) -> String {
    let head = |status: &str, reason: &str| {
        format!(
            "{{\n  \"status\" : \"{status}\",\n  \"reason\" : \"{reason}\",\n  \"leader_alias\" : \"leader-cluster\",\n  \"leader_index\" : \"{index}\",\n  \"follower_index\" : \"{index}\""
        )
    };
    let syncing = |leader: i64, follower: i64| {
        let shards = if verbose {
            format!(
                ",\n  \"shard_replication_details\" : [ {{\n    \"shard_id\" : \"[{index}][0]\",\n    \"syncing_task_details\" : {{\n      \"leader_checkpoint\" : {leader},\n      \"follower_checkpoint\" : {follower},\n      \"seq_no\" : {}\n    }}\n  }} ]",
                follower + 1
            )
        } else {
            String::new()
        };
        format!(
            "{},\n  \"syncing_details\" : {{\n    \"leader_checkpoint\" : {leader},\n    \"follower_checkpoint\" : {follower},\n    \"seq_no\" : {}\n  }}{shards}\n}}",
            head("SYNCING", "User initiated"),
            follower + 1
        )
    };
    match state {
        IndexState::InStep { checkpoint } => syncing(*checkpoint, *checkpoint),
        IndexState::Behind { leader, follower } => syncing(*leader, *follower),
        IndexState::Bootstrapping { percent } => format!(
            "{},\n  \"bootstrap_details\" : {{\n    \"bytes_total\" : 1000,\n    \"bytes_recovered\" : {},\n    \"bytes_percent\" : {percent},\n    \"files_total\" : 10,\n    \"files_recovered\" : 4,\n    \"files_percent\" : 40.0,\n    \"start_time\" : 1700000000000,\n    \"running_time\" : 1200\n  }}\n}}",
            head("BOOTSTRAPPING", "User initiated"),
            (percent * 10.0) as i64
        ),
        IndexState::Paused => format!("{}\n}}", head("PAUSED", "User initiated")),
        IndexState::Failed => format!(
            "{}\n}}",
            head(
                "FAILED",
                "no permissions for [indices:data/read/plugins/replication/file_chunk] and associated roles"
            )
        ),
        IndexState::NotInProgress | IndexState::NotFound => {
            "{\n  \"status\" : \"REPLICATION NOT IN PROGRESS\"\n}".to_string()
        }
        IndexState::Malformed => "{\n  \"status\" : \"SYNCING\",\n  \"syncing_details\" : {\n    \"leader_checkp".to_string(),
    }
}

fn follower_stats(state: &State) -> String {
    let mut syncing = Vec::new();
    let (mut bootstrapping, mut paused, mut failed) = (0, 0, 0);
    for (index, s) in &state.indices {
        match s {
            IndexState::InStep { checkpoint } => syncing.push((index, *checkpoint, *checkpoint)),
            IndexState::Behind { leader, follower } => syncing.push((index, *leader, *follower)),
            IndexState::Bootstrapping { .. } => bootstrapping += 1,
            IndexState::Paused => paused += 1,
            IndexState::Failed => failed += 1,
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
