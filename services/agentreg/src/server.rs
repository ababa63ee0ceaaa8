//! The listeners' connection handling: an accept loop that caps connections in total and per
//! client address, and serves each with hyper's HTTP/1.1 and HTTP/2 under explicit limits
//! (header-read timeout, idle timeout, request timeout, keep-alive pings, stream and header caps).
//! It also decides each request's client address, believing `X-Forwarded-For` only from
//! trusted proxies.

use crate::app::address_key;
use crate::config::{Cidr, ConnectionLimits};
use atomic_waker::AtomicWaker;
use axum::Router;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tower::ServiceExt as _;

/// How a listener answers a request that ran past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAnswer {
    /// `503` with GitLab's JSON message.
    Rest,
    /// gRPC `DEADLINE_EXCEEDED`.
    Grpc,
}

/// Everything a listener needs besides its socket and router.
#[derive(Clone)]
pub struct ListenerOptions {
    pub limits: ConnectionLimits,
    pub trusted_proxies: Arc<Vec<Cidr>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub timeout_answer: TimeoutAnswer,
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops accepting, asks every
/// connection to finish its requests in flight, and waits for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ListenerOptions,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let max_connections = options.limits.max_connections;
    let connection_slots = Arc::new(Semaphore::new(max_connections));
    let per_address = Arc::new(AddressCounts::default());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.limits.header_read_timeout)
        .max_buf_size((options.limits.max_header_bytes as usize).max(8 * 1024) * 4)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.limits.http2_max_concurrent_streams)
        .max_header_list_size(options.limits.max_header_bytes)
        .keep_alive_interval(options.limits.http2_keepalive)
        .keep_alive_timeout(options.limits.http2_keepalive)
        .max_pending_accept_reset_streams(Some(20))
        // Bounds what one connection may make the server buffer before a handler reads it.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or a reset before accept: wait a little instead of spinning.
                tracing::warn!(error = %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            tracing::debug!(peer = %peer, "connection refused: too many connections");
            continue;
        };
        let Some(address_slot) =
            per_address.acquire(peer.ip(), options.limits.max_connections_per_address)
        else {
            tracing::debug!(peer = %peer, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            options: options.clone(),
            peer,
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(address_slot);
            drop(slot);
        });
    }
    // Every connection holds a slot until it ends: taking them all back waits for the drain.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _drained = connection_slots.acquire_many(all).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, so that the connection caps, not the
/// descriptor limit, decide when connections are refused.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised the open-files limit"),
        Err(error) => tracing::warn!(error = %error, "raising the open-files limit failed"),
    }
}

/// The client address a request is attributed to: the peer, or, when the peer is a trusted
/// proxy, the rightmost `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[Cidr]) -> IpAddr {
    let trusted = |address: IpAddr| trusted_proxies.iter().any(|cidr| cidr.contains(address));
    if !trusted(peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => hops.push(address),
                Err(_) => return peer,
            }
        }
    }
    // Walk back from the nearest hop while the hops are our own proxies.
    let mut client = peer;
    while let Some(hop) = hops.pop() {
        client = hop;
        if !trusted(hop) {
            break;
        }
    }
    client
}

/// The scheme the client used: `https` over TLS, or what a trusted proxy says it saw.
fn client_scheme(peer: IpAddr, headers: &HeaderMap, options: &ListenerOptions) -> &'static str {
    if options.tls.is_some() {
        return "https";
    }
    if options
        .trusted_proxies
        .iter()
        .any(|cidr| cidr.contains(peer))
        && let Some(proto) = headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
    {
        return match proto.trim().to_ascii_lowercase().as_str() {
            "https" => "https",
            _ => "http",
        };
    }
    "http"
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    options: ListenerOptions,
    peer: SocketAddr,
    stop: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let limits = &self.options.limits;
        match self.options.tls.clone() {
            None => self.serve_io(TokioIo::new(stream)).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls_stream)) => self.serve_io(TokioIo::new(tls_stream)).await,
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %self.peer, error = %error, "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_io<I>(self, io: TokioIo<I>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            let options = self.options.clone();
            let peer = self.peer;
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let activity = activity.clone();
                let router = router.clone();
                let options = options.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(request, router, &options, peer, &activity).await,
                    )
                }
            })
        };
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        // The stop signal and the idle check live in a task of their own, woken only by them;
        // polled beside the connection, they would be polled again on every read and write.
        let verdict = Arc::new(Verdict::default());
        let _watchdog = AbortOnDropHandle::new(tokio::spawn(watch(
            activity,
            verdict.clone(),
            self.stop.clone(),
            self.options.limits.idle_timeout,
        )));
        let mut draining = false;
        let ended = std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                match verdict.poll(cx) {
                    Ask::Close => return Poll::Ready(None),
                    Ask::Drain if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    Ask::Drain | Ask::Serve => return Poll::Pending,
                }
            }
        })
        .await;
        match ended {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                tracing::debug!(peer = %self.peer, error = %error, "connection ended with an error");
            }
            None => tracing::debug!(peer = %self.peer, "closing an idle connection"),
        }
    }
}

/// What a connection's watchdog asks of it, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Ask {
    Serve = 0,
    /// The server is stopping: finish the requests in flight, take no more.
    Drain = 1,
    /// The connection was idle for the idle timeout.
    Close = 2,
}

/// The watchdog's latest [`Ask`], and the connection task to wake when it changes.
#[derive(Default)]
struct Verdict {
    ask: AtomicU8,
    waker: AtomicWaker,
}

impl Verdict {
    fn raise(&self, ask: Ask) {
        self.ask.fetch_max(ask as u8, Ordering::SeqCst);
        self.waker.wake();
    }

    /// The current ask; the task is woken when it is raised.
    fn poll(&self, cx: &mut Context<'_>) -> Ask {
        // Registered before reading, so a raise between the two still wakes the task.
        self.waker.register(cx.waker());
        match self.ask.load(Ordering::SeqCst) {
            0 => Ask::Serve,
            1 => Ask::Drain,
            _ => Ask::Close,
        }
    }
}

/// Asks a connection to drain when the server stops, and to close once it has had no request
/// in flight and none started for `idle_timeout`. It looks every eighth of the timeout, so an
/// idle connection closes between one and one and a quarter timeouts after its last request.
async fn watch(
    activity: Arc<Activity>,
    verdict: Arc<Verdict>,
    stop: CancellationToken,
    idle_timeout: Duration,
) {
    let mut check = tokio::time::interval((idle_timeout / 8).max(Duration::from_millis(25)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.requests.load(Ordering::SeqCst);
    let mut quiet_since = Instant::now();
    let mut stopping = false;
    loop {
        tokio::select! {
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                verdict.raise(Ask::Drain);
            }
            _ = check.tick() => {
                let requests = activity.requests.load(Ordering::SeqCst);
                if requests != seen || activity.in_flight.load(Ordering::SeqCst) > 0 {
                    seen = requests;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= idle_timeout {
                    verdict.raise(Ask::Close);
                    return;
                }
            }
        }
    }
}

/// Who sent a request, as the listener decided it; in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or as a trusted proxy reports it.
    pub address: IpAddr,
    /// The scheme the client used (`https` over TLS, or as a trusted proxy reports it), for
    /// absolute links.
    pub scheme: &'static str,
}

/// Runs one request: records the client address and scheme, bounds its duration, and keeps
/// the connection's activity up to date.
async fn handle(
    mut request: Request<Incoming>,
    router: Router,
    options: &ListenerOptions,
    peer: SocketAddr,
    activity: &Activity,
) -> Response<axum::body::Body> {
    let _in_flight = activity.start();
    let client = client_address(peer.ip(), request.headers(), &options.trusted_proxies);
    let scheme = client_scheme(peer.ip(), request.headers(), options);
    request.extensions_mut().insert(Client {
        address: client,
        scheme,
    });
    let request = request.map(axum::body::Body::new);
    match tokio::time::timeout(options.limits.request_timeout, router.oneshot(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(infallible)) => match infallible {},
        Err(_) => timeout_response(options.timeout_answer),
    }
}

fn timeout_response(answer: TimeoutAnswer) -> Response<axum::body::Body> {
    match answer {
        TimeoutAnswer::Rest => {
            let mut response = Response::new(axum::body::Body::from(
                r#"{"message":"503 Service Unavailable"}"#,
            ));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        TimeoutAnswer::Grpc => {
            tonic::Status::deadline_exceeded("request timed out").into_http::<axum::body::Body>()
        }
    }
}

/// A connection's requests: how many are in flight, and a count of starts and ends that the
/// watchdog compares between its checks (no clock is read per request).
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
}

/// Marks a request as finished when dropped (also when it is cancelled).
struct InFlight<'a>(&'a Activity);

impl Activity {
    fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Open connections per client address; IPv6 addresses count per /64, the block one host
/// usually holds.
#[derive(Default)]
struct AddressCounts {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Gives back an address's connection slot when dropped.
struct AddressSlot {
    counts: Arc<AddressCounts>,
    key: IpAddr,
}

impl AddressCounts {
    fn acquire(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = address_key(address);
        let mut counts = self.lock();
        let count = counts.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            key,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every mutation is a single map operation, so a poisoned map is still consistent.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];

        let client = client_address(peer, &forwarded("198.51.100.1"), &trusted);

        assert_eq!(client, peer);
    }

    #[test]
    fn forwarded_for_from_a_trusted_proxy_names_the_nearest_untrusted_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];

        let client = client_address(
            peer,
            &forwarded("1.2.3.4, 198.51.100.1, 10.0.0.3"),
            &trusted,
        );

        assert_eq!(client, "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_malformed_forwarded_for_falls_back_to_the_peer() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];

        let client = client_address(peer, &forwarded("not-an-address"), &trusted);

        assert_eq!(client, peer);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();

        assert_eq!(address_key(one), address_key(other));
        assert_ne!(
            address_key(one),
            address_key("2001:db8:1:3::1".parse().unwrap())
        );
    }
}
