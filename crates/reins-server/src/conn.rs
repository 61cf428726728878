//! How `reins serve` accepts connections and how long it lets each one
//! take. One accept loop serves plain HTTP and HTTPS alike, so the limits
//! are the same on both: a client that trickles its request, or opens
//! connections it never uses, is closed instead of holding a file
//! descriptor for as long as it likes. See `docs/ARCHITECTURE.md`
//! ("Connections").

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use reins_runtime::metric_names::{
    ACCEPT_ERRORS_TOTAL, CONNECTIONS_CLOSED_TOTAL, CONNECTIONS_OPEN, CONNECTIONS_REFUSED_TOTAL,
};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::settings::ServerSettings;

/// File descriptors kept out of the connection cap for everything else the
/// process opens (the state store, plugin files, upstream connections).
const FD_RESERVE: usize = 64;

/// The connection limits of `[server]`, as durations and counts.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl ConnLimits {
    /// The limits of `settings`; an absent `max_connections` is derived
    /// from the open-file limit, so the cap is hit before `accept` fails.
    pub fn from_settings(settings: &ServerSettings) -> Self {
        let max_connections = settings.max_connections.unwrap_or_else(|| {
            let (derived, soft) = derived_max_connections();
            tracing::info!(
                max_connections = derived,
                open_file_limit = soft,
                "max_connections not set: derived from the open-file limit (80 % of it, less {FD_RESERVE})"
            );
            derived
        });
        ConnLimits {
            header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(settings.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            max_header_bytes: settings.max_header_bytes,
            max_connections,
            max_connections_per_ip: settings.max_connections_per_ip,
        }
    }
}

/// 80 % of the soft `RLIMIT_NOFILE` less [`FD_RESERVE`] (at least 16), and
/// the soft limit it came from (`None` when it could not be read, when
/// 1,024 is assumed).
fn derived_max_connections() -> (usize, Option<u64>) {
    let soft = open_file_limit();
    let limit = soft.unwrap_or(1024).min(1 << 20) as usize;
    ((limit * 4 / 5).saturating_sub(FD_RESERVE).max(16), soft)
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

/// One open connection, as the registry and its own task see it.
struct Conn {
    /// When it was accepted; activity is counted in ms from here.
    start: Instant,
    /// Last byte read or written, in ms since `start`.
    last_activity_ms: AtomicU64,
    /// Requests whose answer is being prepared: such a connection is not idle
    /// however long the handler takes (the request deadline bounds that).
    in_flight: AtomicUsize,
    /// Told to close to make room for a client with fewer connections.
    evict: Notify,
}

impl Conn {
    fn new() -> Self {
        Conn {
            start: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            evict: Notify::new(),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.start + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// Open connections by client address, for the two caps.
struct Registry {
    max_total: usize,
    max_per_ip: usize,
    inner: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    total: usize,
    next_id: u64,
    by_ip: HashMap<IpAddr, HashMap<u64, Arc<Conn>>>,
}

impl Connections {
    fn remove(&mut self, ip: IpAddr, id: u64) -> bool {
        let Some(conns) = self.by_ip.get_mut(&ip) else {
            return false;
        };
        let removed = conns.remove(&id).is_some();
        if conns.is_empty() {
            self.by_ip.remove(&ip);
        }
        if removed {
            self.total -= 1;
        }
        removed
    }
}

impl Registry {
    /// A slot for a connection from `ip`, or why there is none. At the total
    /// cap a client with fewer connections than the busiest address still
    /// gets in: an idle connection of that address is evicted for it, so
    /// one crowd of connections cannot lock out every other client (the
    /// health probe among them).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = inner.by_ip.get(&ip).map_or(0, HashMap::len);
        if mine >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        if inner.total >= self.max_total {
            let victim = inner
                .by_ip
                .iter()
                .max_by_key(|(_, conns)| conns.len())
                .filter(|(_, conns)| conns.len() > mine + 1)
                .and_then(|(heavy, conns)| {
                    conns
                        .iter()
                        .find(|(_, c)| !c.busy())
                        .map(|(id, c)| (*heavy, *id, c.clone()))
                });
            let Some((heavy, id, conn)) = victim else {
                return Err(Refusal::Total);
            };
            inner.remove(heavy, id);
            conn.evict.notify_one();
        }
        inner.total += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        let conn = Arc::new(Conn::new());
        inner.by_ip.entry(ip).or_default().insert(id, conn.clone());
        metrics::gauge!(CONNECTIONS_OPEN).set(inner.total as f64);
        Ok(Slot {
            registry: self.clone(),
            ip,
            id,
            conn,
        })
    }
}

/// A connection's place in the registry, given back when its task ends.
struct Slot {
    registry: Arc<Registry>,
    ip: IpAddr,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self
            .registry
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // An evicted connection was already taken out when it was chosen.
        inner.remove(self.ip, self.id);
        metrics::gauge!(CONNECTIONS_OPEN).set(inner.total as f64);
    }
}

/// What every connection task shares.
struct Shared {
    app: Router,
    http: hyper::server::conn::http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
}

/// Accepts on `listener` until `shutdown` resolves, then stops accepting,
/// lets every connection finish the request it is in, and returns.
pub async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    // hyper's read buffer must hold the largest head it is to accept.
    if limits.max_header_bytes > 400 * 1024 {
        http.max_buf_size(limits.max_header_bytes);
    }
    let registry = Arc::new(Registry {
        max_total: limits.max_connections,
        max_per_ip: limits.max_connections_per_ip,
        inner: Mutex::new(Connections::default()),
    });
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        body_read_timeout_ms = limits.body_read_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        max_header_bytes = limits.max_header_bytes,
        "connection limits"
    );
    let shared = Arc::new(Shared {
        app,
        http,
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        limits,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a sender; when all are dropped, all are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    // Failures in a row: the first is a warning, the rest (10 a second while
    // out of descriptors) would only flood the log.
    let mut failing = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if failing > 0 {
                    tracing::info!(failures = failing, "accept works again");
                    failing = 0;
                }
                accepted
            }
            Err(error) => {
                metrics::counter!(ACCEPT_ERRORS_TOTAL).increment(1);
                failing += 1;
                if out_of_resources(&error) {
                    // The pending connection stays in the backlog; retrying at
                    // once would spin on the same error.
                    if failing == 1 {
                        tracing::warn!(%error, "accept failed; retrying every 100 ms until it works");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = &mut shutdown => break,
                    }
                } else {
                    tracing::debug!(%error, "accept failed");
                }
                continue;
            }
        };
        let slot = match registry.admit(crate::net::client_key(peer.ip())) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Dropping the stream closes it now: the descriptor is free
                // before the next accept.
                metrics::counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => refusal.reason())
                    .increment(1);
                tracing::debug!(%peer, reason = refusal.reason(), "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            slot,
            shared.clone(),
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

/// Errors after which the next `accept` would fail the same way at once.
fn out_of_resources(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            error.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        true
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let conn = slot.conn.clone();
    let io = Tracked {
        io: stream,
        conn: conn.clone(),
    };
    let reason = match &shared.tls {
        None => serve_http(io, peer, &shared, &conn, stop).await,
        Some(acceptor) => {
            // A handshake is bounded like a request head: it is the client's
            // first move, and a stalled one holds a descriptor the same way.
            let handshake =
                tokio::time::timeout(shared.limits.header_read_timeout, acceptor.accept(io));
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => serve_http(tls, peer, &shared, &conn, stop).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        Some("tls_handshake")
                    }
                    Err(_) => Some("tls_handshake"),
                },
                () = conn.evict.notified() => Some("evicted"),
            }
        }
    };
    if let Some(reason) = reason {
        metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => reason).increment(1);
        tracing::debug!(%peer, reason, "connection closed by the server");
    }
    drop(slot);
}

/// Serves HTTP/1.1 on `io` until the client or a limit ends it; the reason
/// when the server closed it early.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    shared: &Shared,
    conn: &Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) -> Option<&'static str>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.clone();
    let body_timeout = shared.limits.body_read_timeout;
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = InFlight::new(tracked.clone());
        let (mut parts, body) = req.into_parts();
        // Handlers key the slowing of failed authentications on the peer.
        parts.extensions.insert(ConnectInfo(peer));
        let req = hyper::Request::from_parts(
            parts,
            axum::body::Body::new(DeadlineBody::new(body, body_timeout)),
        );
        let app = app.clone();
        async move {
            let answer = app.oneshot(req).await;
            drop(busy);
            answer
        }
    });
    let http = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let mut draining = false;
    loop {
        tokio::select! {
            done = http.as_mut() => {
                return match done {
                    Ok(()) => None,
                    Err(e) if e.is_timeout() => Some("header_timeout"),
                    Err(e) if e.is_parse_too_large() => Some("header_too_large"),
                    Err(error) => {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                        None
                    }
                };
            }
            _ = stop.changed(), if !draining => {
                // Stops keep-alive: an idle connection closes now, a busy one
                // after its answer.
                draining = true;
                http.as_mut().graceful_shutdown();
            }
            () = conn.evict.notified() => return Some("evicted"),
            () = idle(conn, shared.limits.idle_timeout) => return Some("idle_timeout"),
        }
    }
}

/// Resolves once no byte has moved for `timeout` while no request was being
/// answered. hyper's header timeout already bounds the wait for a request
/// head; this also catches a client that stops reading an answer (writes
/// stall) and the gaps hyper does not time.
async fn idle(conn: &Conn, timeout: Duration) {
    loop {
        let last = conn.last_activity();
        tokio::time::sleep_until(last + timeout).await;
        if !conn.busy() && conn.last_activity() == last {
            return;
        }
    }
}

/// Marks a request in flight until dropped (also when hyper drops the
/// answer's future because the connection went away).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The socket, noting when bytes move for the idle timeout.
struct Tracked<T> {
    io: T,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

impl BodyError {
    /// Whether `error`, or an error it wraps, is a body deadline passing:
    /// extractors see it inside their own rejection.
    pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if matches!(e.downcast_ref::<BodyError>(), Some(BodyError::Timeout(_))) {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// A request body that must arrive whole by a deadline set when its head
/// was read. A total rather than tower-http's per-frame timeout: a client
/// sending a byte a second would reset a per-frame timer forever. When it
/// expires the handler sees an error and answers; hyper then closes the
/// connection, since the body was not read to its end.
struct DeadlineBody {
    body: Incoming,
    timeout: Duration,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration) -> Self {
        DeadlineBody {
            body,
            timeout,
            deadline: Instant::now() + timeout,
            timer: None,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        // The timer only exists once the body is waited for: most bodies
        // arrive with their head and never need one.
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => "body_timeout").increment(1);
            return Poll::Ready(Some(Err(BodyError::Timeout(self.timeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_total: usize, max_per_ip: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max_total,
            max_per_ip,
            inner: Mutex::new(Connections::default()),
        })
    }

    #[test]
    fn the_busiest_address_makes_room_for_a_lighter_one() {
        let registry = registry(3, 10);
        let (crowd, probe) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        let held: Vec<Slot> = (0..3)
            .map(|_| registry.admit(crowd).expect("under the cap"))
            .collect();
        assert_eq!(
            registry.admit(crowd).err(),
            Some(Refusal::Total),
            "the crowd may not evict itself"
        );
        let probe_slot = registry
            .admit(probe)
            .expect("a lighter address evicts an idle crowd connection");
        assert_eq!(registry.inner.lock().unwrap().total, 3);
        drop(held);
        drop(probe_slot);
        assert_eq!(
            registry.inner.lock().unwrap().total,
            0,
            "every slot, evicted or not, is given back once"
        );
    }

    #[test]
    fn a_busy_connection_is_never_evicted_and_the_per_address_cap_holds() {
        let registry = registry(2, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<Slot> = (0..2)
            .map(|_| registry.admit(a).expect("under the caps"))
            .collect();
        assert_eq!(registry.admit(a).err(), Some(Refusal::PerIp));
        let _busy: Vec<InFlight> = held.iter().map(|s| InFlight::new(s.conn.clone())).collect();
        assert_eq!(
            registry.admit(b).err(),
            Some(Refusal::Total),
            "connections answering a request stay"
        );
    }
}
