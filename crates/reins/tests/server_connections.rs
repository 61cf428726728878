//! Slow and hostile connections against real `reins serve` processes on
//! loopback, with raw sockets: trickled heads and bodies, idle kept-alive
//! connections, oversized heads, and crowds past the connection caps. The
//! attackers connect from 127.0.0.2, so the per-address cap falls on them
//! and not on the `/healthz` probes from 127.0.0.1. Timeouts are a few
//! hundred ms; the tests assert what happened and how often, never how fast.

use reins_testing::config::Config;
use reins_testing::server::{self, Served};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for something that must happen before it calls it
/// a failure: a guard against hanging, far above every configured timeout.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(dir: &Path, server: &str) -> PathBuf {
    Config::new()
        .plugins_dir(".")
        .test_cache()
        .scripted("up", r#"["hello"]"#)
        .table("[pipelines.echo]\nmodel = \"up\"\n")
        .table(&format!("[server]\n{server}"))
        .write(dir)
}

/// `reins serve` with these `[server]` keys, and its config's directory.
struct Started {
    _dir: tempfile::TempDir,
    served: Served,
}

impl Started {
    fn new(server: &str) -> Started {
        let dir = tempfile::tempdir().expect("tempdir");
        let served = server::serve(&config(dir.path(), server));
        Started { _dir: dir, served }
    }

    fn base(&self) -> &str {
        &self.served.base
    }

    fn addr(&self) -> SocketAddr {
        let hostport = self.base().trim_start_matches("http://");
        hostport.parse().expect("http://IP:PORT")
    }
}

/// A connection from 127.0.0.2, the attackers' address.
async fn attacker(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("address"))
        .expect("bind 127.0.0.2");
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes `stream` (EOF or reset), sending `trickle`
/// every 50 ms meanwhile (a slow client never stops); what it answered
/// before closing. Panics if the server keeps it open past [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream, trickle: &[u8]) -> String {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the server kept the connection open"
        );
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&answer).into_owned(),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) if !trickle.is_empty() => {
                if stream.write_all(trickle).await.is_err() {
                    return String::from_utf8_lossy(&answer).into_owned();
                }
            }
            Err(_) => {}
        }
    }
}

/// Whether the server has closed `stream` (without waiting).
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// `/healthz` answered 200 on a new connection from 127.0.0.1.
async fn healthz(base: &str) -> bool {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    matches!(client.get(format!("{base}/healthz")).send().await, Ok(r) if r.status() == 200)
}

/// The metric once it reaches `want` (a connection's close is counted just
/// after its socket is), or its last value when it never does.
async fn metric_reaches(base: &str, key: &str, want: f64) -> f64 {
    server::metric_reaches(base, key, want, PATIENCE).await
}

const HEAD_START: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_slow_bodies_are_closed_after_their_timeouts() {
    let started = Started::new(
        "header_read_timeout_ms = 300\nbody_read_timeout_ms = 300\nidle_timeout_ms = 30000\n",
    );
    let addr = started.addr();

    // Three heads that never end (a header line every 50 ms) and a client that sends nothing.
    let mut trickling = Vec::new();
    for _ in 0..3 {
        let mut stream = attacker(addr).await;
        stream.write_all(HEAD_START).await.expect("write");
        trickling.push(stream);
    }
    let mut silent = attacker(addr).await;
    for stream in &mut trickling {
        let answer = until_closed(stream, b"x-slow: 1\r\n").await;
        assert!(
            answer.is_empty(),
            "no answer to a head that never ended: {answer}"
        );
    }
    assert_eq!(until_closed(&mut silent, b"").await, "");

    // A whole head, then a body a byte every 50 ms: answered 408, then closed.
    let mut slow_body = attacker(addr).await;
    let head = "POST /v1/pipelines/echo/runs HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"input\": \"";
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let answer = until_closed(&mut slow_body, b"a").await;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "an answer before closing: {answer}"
    );
    assert!(answer.contains("request_timeout"), "{answer}");

    let closed = r#"reins_connections_closed_total{reason="header_timeout"}"#;
    assert_eq!(metric_reaches(started.base(), closed, 4.0).await, 4.0);
    let body = r#"reins_connections_closed_total{reason="body_timeout"}"#;
    assert_eq!(metric_reaches(started.base(), body, 1.0).await, 1.0);
    assert!(healthz(started.base()).await, "the server still answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_alive_connection_is_closed() {
    // The head timeout is long, so only the idle timeout can close these.
    let started = Started::new("header_read_timeout_ms = 30000\nidle_timeout_ms = 300\n");
    let mut kept = attacker(started.addr()).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut kept, b"").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answered, kept alive, then closed: {answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    let closed = r#"reins_connections_closed_total{reason="idle_timeout"}"#;
    assert_eq!(metric_reaches(started.base(), closed, 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_head_gets_431_and_a_large_one_under_the_cap_is_served() {
    let started = Started::new("max_header_bytes = 8192\n");
    let request = |filler: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-filler: {}\r\nconnection: close\r\n\r\n",
            "a".repeat(filler)
        )
    };

    let mut large = attacker(started.addr()).await;
    large
        .write_all(request(6000).as_bytes())
        .await
        .expect("write");
    let answer = until_closed(&mut large, b"").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut oversized = attacker(started.addr()).await;
    oversized
        .write_all(request(10_000).as_bytes())
        .await
        .expect("write");
    let answer = until_closed(&mut oversized, b"").await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let closed = r#"reins_connections_closed_total{reason="header_too_large"}"#;
    assert_eq!(metric_reaches(started.base(), closed, 1.0).await, 1.0);
}

/// `n` connections from the attackers' address, each with a head begun and
/// never finished (the head timeout is long: nothing but a cap closes them).
async fn crowd(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut stream = attacker(addr).await;
        // A refused connection may already be closed; that is for the caller to see.
        let _ = stream.write_all(HEAD_START).await;
        streams.push(stream);
    }
    streams
}

async fn all_healthy(base: &str, probes: usize) {
    for i in 0..probes {
        assert!(
            healthz(base).await,
            "/healthz probe {i} from 127.0.0.1 failed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_per_address_cap_an_address_is_closed_at_once_and_healthz_answers() {
    let started = Started::new(
        "header_read_timeout_ms = 60000\nmax_connections_per_ip = 8\nmax_connections = 1000\n",
    );
    let held = crowd(started.addr(), 8).await;
    let mut extra = crowd(started.addr(), 4).await;
    for stream in &mut extra {
        assert_eq!(
            until_closed(stream, b"").await,
            "",
            "closed without an answer"
        );
    }
    all_healthy(started.base(), 10).await;
    let refused = r#"reins_connections_refused_total{reason="max_connections_per_ip"}"#;
    assert_eq!(metric_reaches(started.base(), refused, 4.0).await, 4.0);
    assert!(
        held.iter().all(|s| !is_closed(s)),
        "the connections under the cap stay open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_total_cap_the_crowd_is_refused_and_healthz_still_answers() {
    let started = Started::new(
        "header_read_timeout_ms = 60000\nmax_connections = 8\nmax_connections_per_ip = 1000\n",
    );
    let base = started.base().to_owned();
    let held = crowd(started.addr(), 8).await;
    let mut extra = crowd(started.addr(), 4).await;
    for stream in &mut extra {
        assert_eq!(
            until_closed(stream, b"").await,
            "",
            "closed without an answer"
        );
    }
    let refused = r#"reins_connections_refused_total{reason="max_connections"}"#;
    // The metrics request itself needs a slot: it evicts one of the crowd.
    assert_eq!(metric_reaches(&base, refused, 4.0).await, 4.0);

    // Each probe from a lighter address evicts an idle crowd connection if the server is full.
    all_healthy(&base, 10).await;
    // Every crowd connection closed was evicted, and every eviction closed
    // one (counted just after its socket closes, hence the wait).
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let evicted = server::metric(&base, r#"reins_connections_closed_total{reason="evicted"}"#)
            .await as usize;
        let closed = held.iter().filter(|s| is_closed(s)).count();
        if evicted >= 1 && closed == evicted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "evicted {evicted}, closed {closed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server::metric(&base, refused).await,
        4.0,
        "the probes were never refused"
    );
}

#[test]
fn connection_settings_that_make_no_sense_fail_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in [
        "header_read_timeout_ms",
        "body_read_timeout_ms",
        "idle_timeout_ms",
        "max_header_bytes",
        "max_connections",
        "max_connections_per_ip",
    ] {
        let err = server::serve_fails(&config(dir.path(), &format!("{key} = 0\n")), &[]);
        assert!(
            err.contains(&format!("`server.{key}`")) && err.contains("greater than 0"),
            "{key}: {err}"
        );
    }
    let err = server::serve_fails(&config(dir.path(), "max_connections = -1\n"), &[]);
    assert!(err.contains("max_connections"), "{err}");
}

/// Descriptors the server process has open now.
fn open_files(served: &Served) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", served.child.id())).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_the_accept_loop_backs_off_and_serves_again() {
    const LIMIT: usize = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    // The caps out of the way: only the file limit stops these connections.
    let served = server::serve_with_file_limit(
        &config(
            dir.path(),
            "header_read_timeout_ms = 60000\nmax_connections = 100000\nmax_connections_per_ip = 100000\n",
        ),
        LIMIT as u32,
    );
    let addr: SocketAddr = served
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let crowd = crowd(addr, LIMIT + 50).await;
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while open_files(&served) < LIMIT {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the server never ran out of descriptors"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Out of descriptors, with connections waiting: `accept` fails until some close.
    drop(crowd);
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !healthz(&served.base).await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the server never answered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server::metric(&served.base, "reins_accept_errors_total").await >= 1.0,
        "accept failed and the loop went on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_cap_from_the_file_limit_keeps_healthz_reachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served =
        server::serve_with_file_limit(&config(dir.path(), "header_read_timeout_ms = 60000\n"), 256);
    let addr: SocketAddr = served
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    // 80 % of 256 less 64 is 140: the rest of the crowd is closed at accept.
    let mut crowd = crowd(addr, 300).await;
    for stream in &mut crowd[140..] {
        assert_eq!(
            until_closed(stream, b"").await,
            "",
            "closed without an answer"
        );
    }
    all_healthy(&served.base, 10).await;
    let refused = r#"reins_connections_refused_total{reason="max_connections"}"#;
    assert_eq!(metric_reaches(&served.base, refused, 160.0).await, 160.0);
    assert_eq!(
        server::metric(&served.base, "reins_accept_errors_total").await,
        0.0,
        "never out of descriptors"
    );
}
