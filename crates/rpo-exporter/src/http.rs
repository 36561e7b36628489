//! The HTTP server (hyper): `/metrics` (or the configured telemetry path),
//! `/failover-readiness`, the HTML board at `/`, `/-/healthy`, `/-/ready`
//! and `POST /-/reload`, all under `--web.route-prefix` when one is set.
//!
//! Every answer is computed from the latest snapshot; no request waits on a
//! probe. With `--web.config.file` ([`crate::web_config`]) connections are
//! TLS and every request needs basic authentication (a `401` with
//! `WWW-Authenticate` otherwise). A client that sends `Accept-Encoding: gzip`
//! (Prometheus does) gets its answer gzip-compressed. A method an endpoint
//! does not serve is a `405` whose `Allow` header lists the ones it does.
//!
//! The server is built to stay reachable for a scraper and for failover
//! automation while others abuse it:
//! - a client gets [`WebLimits::header_read_timeout`] to send a request's
//!   headers, counted from the moment the server waits for it (a new
//!   connection, or a kept-alive one between requests: hyper runs the same
//!   timer), so slow and idle connections close on their own;
//! - request headers are bounded ([`MAX_HEADER_BYTES`]);
//! - at most [`WebLimits::max_connections`] connections are open. When a
//!   new one arrives at the cap, the connection idle longest is closed to
//!   make room (one that never sent a request, or whose last request is
//!   oldest), so idle sockets can never lock a scraper out and file
//!   descriptors stay bounded. Only when every open connection has sent a
//!   request within the last second (a flood of real clients) is the
//!   newcomer refused, with `503 Service Unavailable` and a body saying so.

mod gzip;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_TYPE, LOCATION, VARY, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::board;
use crate::config::Config;
use crate::metrics;
use crate::readiness::{evaluate, Mode};
use crate::reload::Reloader;
use crate::self_metrics::{AwsCallCounters, ConfigReloadStatus};
use crate::store::Store;
use crate::web_config::WebSecurity;

/// The largest request head (request line and headers) read; a larger one
/// is answered `431` by hyper.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A connection that sent a request this recently is never closed to make
/// room for another.
const ACTIVE_WITHIN: Duration = Duration::from_secs(1);

/// How hard the server may be pushed; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Open connections at most (`--web.max-connections`).
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long a
    /// kept-alive connection may sit idle between requests.
    pub header_read_timeout: Duration,
}

/// The default of `--web.max-connections`: a few hundred, well inside the
/// common 1,024 open-file soft limit beside the targets' own connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The default header-read (and keep-alive idle) timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

impl Default for WebLimits {
    fn default() -> WebLimits {
        WebLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Where the endpoints are and who may reach them: `--web.route-prefix`
/// and `--web.config.file`.
#[derive(Debug, Clone, Default)]
pub struct WebOptions {
    pub route_prefix: RoutePrefix,
    /// TLS and basic authentication; `None`: plain HTTP, no authentication.
    pub security: Option<Arc<WebSecurity>>,
}

/// The path every endpoint is served under (`--web.route-prefix`), without
/// a trailing slash; empty for none (`/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePrefix(String);

impl RoutePrefix {
    /// `/`, `/rpo` or `/rpo/` (the same), `/a/b`: a path starting with '/'
    /// of plain path characters.
    pub fn parse(prefix: &str) -> Result<RoutePrefix, String> {
        if !prefix.starts_with('/') {
            return Err(format!(
                "--web.route-prefix `{prefix}` must start with '/' (e.g. /rpo)"
            ));
        }
        if prefix.contains("//")
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c))
        {
            return Err(format!(
                "--web.route-prefix `{prefix}`: use letters, digits, '-', '.', '_', '~' between single slashes"
            ));
        }
        Ok(RoutePrefix(prefix.trim_end_matches('/').to_string()))
    }

    /// The prefix as links start with it: empty, or `/rpo`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path below the prefix (`/rpo/metrics` -> `/metrics`); `Some("")`
    /// for the prefix itself without its slash; `None` outside it.
    fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.0.is_empty() {
            return Some(path);
        }
        let rest = path.strip_prefix(self.0.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// What request handlers read.
pub struct AppState {
    /// The running configuration; a reload swaps it.
    config: RwLock<Arc<Config>>,
    pub store: Arc<Store>,
    /// The counters the daemon's AWS probes count in, for `/metrics`.
    pub aws_calls: Arc<AwsCallCounters>,
    /// The outcome of the last configuration reload, for `/metrics`.
    pub reload_status: Arc<ConfigReloadStatus>,
    /// Where `POST /-/reload` asks; `None` when the configuration came from
    /// no file (an embedded exporter): then it answers 503.
    reloader: Option<Reloader>,
    /// Set once the first poll round is done: `/-/ready` stays 200 after
    /// that, also while a reload's new targets make their first poll.
    ready: AtomicBool,
    /// The route prefix, TLS and basic authentication.
    web: WebOptions,
    /// Each target's exposure against its budget lately, for the board.
    pub history: Arc<board::History>,
    /// `/metrics`: each target's lines from the last scrape, rewritten only
    /// for the targets whose report changed since.
    render_cache: metrics::RenderCache,
    /// `/metrics`: the last body's buffer, kept for the next scrape.
    bodies: Arc<metrics::BodyPool>,
}

impl AppState {
    /// The state of a server of `config`, reading `store`.
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        aws_calls: Arc<AwsCallCounters>,
    ) -> AppState {
        AppState {
            config: RwLock::new(config),
            store,
            aws_calls,
            reload_status: Arc::new(ConfigReloadStatus::loaded_at(SystemTime::now())),
            reloader: None,
            ready: AtomicBool::new(false),
            web: WebOptions::default(),
            history: Arc::new(board::History::default()),
            render_cache: metrics::RenderCache::default(),
            bodies: Arc::default(),
        }
    }

    /// Serves under `web`'s route prefix, with its TLS and authentication.
    pub fn with_web(mut self, web: WebOptions) -> AppState {
        self.web = web;
        self
    }

    /// Answers `POST /-/reload` through `reloader`.
    pub fn with_reloader(mut self, reloader: Reloader) -> AppState {
        self.reloader = Some(reloader);
        self
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `/metrics` exposition of `config` at `now` (what the endpoint
    /// answers; the benchmark times it in-process too).
    /// Rendered into the last body's buffer, which the answer gives back
    /// when it is sent.
    pub fn metrics_body(&self, config: &Arc<Config>, now: SystemTime) -> Bytes {
        let mut body = metrics::render_cached_into(
            config,
            &self.store.snapshot(),
            &self.aws_calls,
            now,
            &self.render_cache,
            self.bodies.take(),
        );
        let mut rest = String::with_capacity(1024);
        metrics::render_config_reload(&mut rest, &self.reload_status);
        metrics::render_server_connections(&mut rest);
        body.extend_from_slice(rest.as_bytes());
        Bytes::from_owner(metrics::PooledBody::new(body, self.bodies.clone()))
    }

    /// Writes `/metrics`' lines of the targets whose report changed since
    /// (what the server does every [`metrics::WRITE_AHEAD_EVERY`]); the
    /// benchmark calls it to set up a scrape as production meets it.
    /// Returns how many targets it looked at (0: nobody scraped lately).
    pub fn write_metrics_ahead(&self) -> usize {
        let config = self.config();
        let looked_at = self
            .render_cache
            .write_ahead(&config, || self.store.snapshot());
        if looked_at == 0 {
            self.bodies.release();
        }
        looked_at
    }

    pub(crate) fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// The open connections, for the cap.
struct Connections {
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    epoch: Instant,
    /// When a full cap was last logged (ms since `epoch`), so an attack
    /// does not flood the log.
    last_logged: AtomicU64,
    closed_to_make_room: AtomicU64,
}

/// One open connection.
struct Slot {
    /// When it was accepted, and when it last started a request (0: never),
    /// in ms since `Connections::epoch`.
    accepted: u64,
    last_request: AtomicU64,
    /// Fired to close the connection (to make room for another).
    close: Notify,
}

impl Connections {
    fn new() -> Connections {
        Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            last_logged: AtomicU64::new(0),
            closed_to_make_room: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 means "never" in `Slot::last_request`.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Registers a new connection, closing the longest-idle one first when
    /// `max` are open. `None`: every open connection is active, refuse it.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Slot>)> {
        let now = self.now_ms();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= max {
            let active_within = ACTIVE_WITHIN.as_millis() as u64;
            let victim = open
                .iter()
                .filter(|(_, slot)| {
                    let last = slot.last_request.load(Ordering::Relaxed);
                    last == 0 || now.saturating_sub(last) > active_within
                })
                .min_by_key(|(_, slot)| {
                    slot.accepted.max(slot.last_request.load(Ordering::Relaxed))
                })
                .map(|(id, _)| *id)?;
            if let Some(slot) = open.remove(&victim) {
                slot.close.notify_one();
            }
            let closed = self.closed_to_make_room.fetch_add(1, Ordering::Relaxed) + 1;
            self.log_full(now, max, closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            accepted: now,
            last_request: AtomicU64::new(0),
            close: Notify::new(),
        });
        open.insert(id, slot.clone());
        Some((id, slot))
    }

    fn log_full(&self, now: u64, max: usize, closed: u64) {
        let last = self.last_logged.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 60_000 {
            self.last_logged.store(now, Ordering::Relaxed);
            tracing::warn!(
                max_connections = max,
                closed_to_make_room = closed,
                "HTTP connection limit reached; closing the longest-idle connections to make room (--web.max-connections)"
            );
        }
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Takes a connection out of the table when its task ends (or is aborted).
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.remove(self.id);
    }
}

/// Serves until `shutdown` completes; then closes every open connection
/// (keep-alive ones included), so a stopped exporter stops answering.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: WebLimits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connections = Arc::new(Connections::new());
    let max_connections = limits.max_connections.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    let mut reserve = FdReserve::new(RESERVED_FDS);
    let writing_ahead = tokio::spawn(write_ahead(state.clone()));
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connections so the set does not grow; a closed
            // connection's descriptor refills the reserve.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                reserve.refill();
                continue;
            }
            // Accept only while the connections' tasks (open, refused or
            // closing to make room) stay within the cap and a little: a
            // burst of new connections waits in the kernel's listen
            // backlog while the evicted ones close, instead of holding
            // more descriptors than the cap (609 at a cap of 512 were seen
            // with 2,000 sockets arriving at once).
            accepted = listener.accept(), if tasks.len() < max_connections + ACCEPT_SLACK => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors (the targets' connections
                    // took them): give one of the reserve to the listener
                    // and accept again at once.
                    if is_out_of_fds(&error) && reserve.release() {
                        tracing::warn!(%error, reserve = reserve.len(), "accept failed: out of file descriptors; used one held in reserve for HTTP (raise LimitNOFILE)");
                        continue;
                    }
                    // Otherwise: log, breathe, go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((id, slot)) = connections.admit(max_connections) else {
            tasks.spawn(refuse(stream, max_connections));
            continue;
        };
        let registered = Registered {
            connections: connections.clone(),
            id,
        };
        tasks.spawn(serve_connection(
            stream,
            state.clone(),
            limits,
            slot,
            registered,
        ));
    }
    writing_ahead.abort();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Connections' tasks beyond `--web.max-connections` that may be alive at
/// once: refusals being answered and connections closing to make room.
const ACCEPT_SLACK: usize = 16;

/// Descriptors the HTTP server holds in reserve (open handles on
/// `/dev/null`) so that `/metrics` and the verdict still answer when the
/// targets' connections have taken every other descriptor.
pub const RESERVED_FDS: usize = 16;

/// Placeholder descriptors, given back one at a time when `accept` runs out.
struct FdReserve {
    held: Vec<std::fs::File>,
    want: usize,
}

impl FdReserve {
    fn new(want: usize) -> FdReserve {
        let mut reserve = FdReserve {
            held: Vec::with_capacity(want),
            want,
        };
        reserve.refill();
        reserve
    }

    /// Takes descriptors back up to the reserve's size, while any are free.
    fn refill(&mut self) {
        while self.held.len() < self.want {
            match std::fs::File::open("/dev/null") {
                Ok(file) => self.held.push(file),
                Err(_) => break,
            }
        }
    }

    /// Closes one held descriptor; false when none is left.
    fn release(&mut self) -> bool {
        self.held.pop().is_some()
    }

    fn len(&self) -> usize {
        self.held.len()
    }
}

/// `EMFILE` or `ENFILE`: the process (or the system) has no descriptor left.
fn is_out_of_fds(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<AppState>,
    limits: WebLimits,
    slot: Arc<Slot>,
    registered: Registered,
) {
    // Until the client sends something, keep the connection as a bare
    // socket: hyper's buffers (8 KB and more per connection) are allocated
    // only for clients that talk, so a crowd of idle sockets costs little.
    tokio::select! {
        ready = tokio::time::timeout(limits.header_read_timeout, stream.readable()) => {
            if !matches!(ready, Ok(Ok(()))) {
                return;
            }
        }
        _ = slot.close.notified() => return,
    }
    let tls = state.web.security.as_ref().and_then(|s| s.tls());
    match tls {
        None => serve_http(stream, state, limits, slot, registered).await,
        Some(tls) => {
            // The handshake gets the header-read timeout too.
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake = tokio::select! {
                done = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => done,
                _ = slot.close.notified() => return,
            };
            match handshake {
                Ok(Ok(stream)) => serve_http(stream, state, limits, slot, registered).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Serves HTTP/1.1 on a connection (plain or TLS) until it ends or is
/// closed to make room.
async fn serve_http<S>(
    stream: S,
    state: Arc<AppState>,
    limits: WebLimits,
    slot: Arc<Slot>,
    registered: Registered,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let epoch = registered.connections.epoch;
    let touched = slot.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        touched
            .last_request
            .store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        // Closed to make room for another: dropping it closes the socket.
        _ = slot.close.notified() => {}
    }
    drop(registered);
}

/// Answers a connection that arrived while every open one is active: a
/// short 503, written without reading the request, then closed.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        "too many connections: all {max} allowed (--web.max-connections) are serving active clients; retry shortly\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The endpoints, found by the path below the route prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Readiness,
    Board,
    Healthy,
    Ready,
    Reload,
}

impl Endpoint {
    fn of(path: &str, telemetry_path: &str) -> Option<Endpoint> {
        Some(match path {
            p if p == telemetry_path => Endpoint::Metrics,
            "/failover-readiness" => Endpoint::Readiness,
            "/" => Endpoint::Board,
            "/-/healthy" => Endpoint::Healthy,
            "/-/ready" => Endpoint::Ready,
            "/-/reload" => Endpoint::Reload,
            _ => return None,
        })
    }

    /// The methods it serves, as the `Allow` header lists them.
    fn allow(self) -> &'static str {
        match self {
            Endpoint::Reload => "POST, PUT",
            _ => "GET, HEAD",
        }
    }

    fn serves(self, method: &Method) -> bool {
        match self {
            Endpoint::Reload => method == Method::POST || method == Method::PUT,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }
}

async fn handle(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let gzip = accepts_gzip(req.headers());
    let response = route(state, req).await;
    if !gzip {
        return response.map(Full::new);
    }
    if response.body().len() < OFF_RUNTIME_BYTES {
        return compress(response).map(Full::new);
    }
    off_runtime(move || compress(response)).await.map(Full::new)
}

/// Bodies from this size on are compressed off the async runtime's worker
/// threads, which also poll the targets: a 1,000-target `/metrics` (3 MiB)
/// takes milliseconds, a 10,000-target one tens.
const OFF_RUNTIME_BYTES: usize = 64 * 1024;

/// `work` on tokio's blocking threads; a 500 if it panicked (a bug). The
/// bodies that grow with the targets (`/metrics`, `/failover-readiness`,
/// `/`) are rendered there, so a scrape of 10,000 targets does not hold up
/// their polls.
async fn off_runtime(work: impl FnOnce() -> Response<Bytes> + Send + 'static) -> Response<Bytes> {
    match tokio::task::spawn_blocking(work).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "rendering an answer failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error rendering the answer; see the exporter's log\n",
            )
        }
    }
}

/// Keeps `/metrics`' per-target lines written between scrapes, so a scrape
/// mostly copies (see [`metrics::RenderCache::write_ahead`]); idle while
/// nobody scrapes.
async fn write_ahead(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(metrics::WRITE_AHEAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || state.write_metrics_ahead()).await;
    }
}

async fn route(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Bytes> {
    if let Some(security) = &state.web.security {
        let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if !security.authorize(authorization).await {
            let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"rpo-exporter\""),
            );
            return response;
        }
    }
    let now = SystemTime::now();
    let config = state.config();
    let prefix = &state.web.route_prefix;
    let Some(path) = prefix.strip(req.uri().path()) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "not found; every endpoint is under {}/ (--web.route-prefix)\n",
                prefix.as_str()
            ),
        );
    };
    if path.is_empty() {
        // The prefix without its slash: the board is one slash further.
        let mut response = text(StatusCode::PERMANENT_REDIRECT, "");
        if let Ok(location) = format!("{}/", prefix.as_str()).parse() {
            response.headers_mut().insert(LOCATION, location);
        }
        return response;
    }
    let Some(endpoint) = Endpoint::of(path, &config.web.telemetry_path) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "not found; try {p}/ , {p}/failover-readiness or {p}{}\n",
                config.web.telemetry_path,
                p = prefix.as_str()
            ),
        );
    };
    if !endpoint.serves(req.method()) {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method not allowed here; use {}\n", endpoint.allow()),
        );
        response.headers_mut().insert(
            ALLOW,
            hyper::header::HeaderValue::from_static(endpoint.allow()),
        );
        return response;
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    match endpoint {
        Endpoint::Reload => reload(state).await,
        Endpoint::Metrics => {
            let state = state.clone();
            off_runtime(move || {
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    state.metrics_body(&config, now),
                )
            })
            .await
        }
        Endpoint::Readiness => {
            let state = state.clone();
            off_runtime(move || readiness(&state, &config, &query, now)).await
        }
        Endpoint::Board => {
            let mode = match query.get("mode").map(|m| m.parse::<Mode>()) {
                None => Mode::Planned,
                Some(Ok(mode)) => mode,
                Some(Err(problem)) => {
                    return text(StatusCode::BAD_REQUEST, &format!("{problem}\n"))
                }
            };
            let state = state.clone();
            off_runtime(move || {
                let verdict = evaluate(&config, &state.store.snapshot(), mode, now, None);
                respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    board::render(
                        &verdict,
                        &board::Links {
                            prefix: state.web.route_prefix.as_str(),
                            telemetry_path: &config.web.telemetry_path,
                        },
                        &state.history,
                    ),
                )
            })
            .await
        }
        Endpoint::Healthy => text(StatusCode::OK, "Healthy\n"),
        Endpoint::Ready => {
            if state.ready.load(Ordering::Relaxed) || state.store.snapshot().first_round_done() {
                state.ready.store(true, Ordering::Relaxed);
                text(StatusCode::OK, "Ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not ready: the first poll round is not done\n",
                )
            }
        }
    }
}

/// Whether the client takes gzip: `gzip` (or `*`) in `Accept-Encoding`
/// with a non-zero weight.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            (name.eq_ignore_ascii_case("gzip") || name == "*") && weight > 0.0
        })
}

/// The answer gzip-compressed (a body too small to gain is sent as is);
/// see [`gzip`] for how a large one is.
fn compress(mut response: Response<Bytes>) -> Response<Bytes> {
    response.headers_mut().insert(
        VARY,
        hyper::header::HeaderValue::from_static("Accept-Encoding"),
    );
    if response.body().len() < 256 {
        return response;
    }
    let Some(compressed) = gzip::gzip(response.body()) else {
        return response;
    };
    response.headers_mut().insert(
        CONTENT_ENCODING,
        hyper::header::HeaderValue::from_static("gzip"),
    );
    *response.body_mut() = Bytes::from(compressed);
    response
}

/// `POST /-/reload` (or `PUT`, as Prometheus): 200 with what changed, or
/// 500 with why the new configuration was refused (the old one runs on).
async fn reload(state: &AppState) -> Response<Bytes> {
    let Some(reloader) = &state.reloader else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this exporter has no configuration file to reload\n",
        );
    };
    match reloader.reload().await {
        Ok(changes) => text(
            StatusCode::OK,
            &format!(
                "configuration reloaded: {} kept, {} added, {} removed, {} restarted\n",
                changes.kept.len(),
                changes.added.len(),
                changes.removed.len(),
                changes.restarted.len()
            ),
        ),
        Err(problem) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("failed to reload config: {problem}\n"),
        ),
    }
}

fn readiness(
    state: &AppState,
    config: &Config,
    query: &HashMap<String, String>,
    now: SystemTime,
) -> Response<Bytes> {
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
        if config.group(name).is_none() {
            let known: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
            return json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "unknown group `{name}`; configured groups: {}",
                    known.join(", ")
                ),
            );
        }
    }
    let verdict = evaluate(config, &state.store.snapshot(), mode, now, group);
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(&verdict.to_json()).unwrap_or_default();
    respond(status, "application/json", body + "\n")
}

fn json_error(status: StatusCode, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({
        "schema_version": crate::readiness::SCHEMA_VERSION,
        "verdict": "NO-GO",
        "ready": false,
        "error": message,
    });
    respond(status, "application/json", body.to_string() + "\n")
}

fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, "no-store")
        .body(body.into())
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
    fn at_the_cap_the_longest_idle_makes_room_and_active_ones_are_kept() {
        let connections = Connections::new();
        let (first, first_slot) = connections.admit(2).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (_, second_slot) = connections.admit(2).unwrap();
        // Both idle: the oldest goes.
        let (_, third_slot) = connections.admit(2).unwrap();
        let open = connections.open.lock().unwrap();
        assert!(!open.contains_key(&first), "the longest idle was closed");
        assert_eq!(open.len(), 2);
        drop(open);
        // Its task is told to close.
        assert!(futures::FutureExt::now_or_never(first_slot.close.notified()).is_some());
        // Both remaining connections just sent a request: refuse the next.
        let now = connections.now_ms();
        second_slot.last_request.store(now, Ordering::Relaxed);
        third_slot.last_request.store(now, Ordering::Relaxed);
        assert!(connections.admit(2).is_none());
        assert_eq!(connections.open.lock().unwrap().len(), 2);
    }

    #[test]
    fn route_prefixes_are_normalized_and_strip_only_whole_segments() {
        let none = RoutePrefix::parse("/").unwrap();
        assert_eq!(none.as_str(), "");
        assert_eq!(none.strip("/metrics"), Some("/metrics"));
        let rpo = RoutePrefix::parse("/rpo/").unwrap();
        assert_eq!(rpo, RoutePrefix::parse("/rpo").unwrap());
        assert_eq!(rpo.strip("/rpo/metrics"), Some("/metrics"));
        assert_eq!(rpo.strip("/rpo"), Some(""));
        assert_eq!(rpo.strip("/rpometrics"), None);
        assert_eq!(rpo.strip("/metrics"), None);
        assert!(RoutePrefix::parse("rpo").is_err());
        assert!(RoutePrefix::parse("/a b").is_err());
        assert!(RoutePrefix::parse("/a//b").is_err());
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, value.parse().unwrap());
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("deflate, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("br, identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

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
