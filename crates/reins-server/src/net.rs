//! Safe network and browser defaults, as middleware around every route:
//! the browser security headers, slowing repeated authentication failures,
//! the `Host` / `Origin` guard and CORS (outermost first). See
//! `docs/ARCHITECTURE.md` ("Server") for why each sits where it does.

use super::error::ApiError;
use super::settings::ServerSettings;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::set_header::SetResponseHeaderLayer;

/// Failed authentications an address may make at full speed before its
/// `401`s are held back; afterwards one a second goes through undelayed.
const FAILURE_BURST: NonZeroU32 = NonZeroU32::new(5).expect("non-zero");
const FAILURES_PER_SECOND: NonZeroU32 = NonZeroU32::MIN;
/// The longest a `401` is held: long enough to make guessing slow, short
/// enough that a held connection costs the server little.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Past this many tracked addresses, addresses back to a full burst are
/// forgotten, so a scan from many addresses cannot grow the table forever.
const MAX_TRACKED: usize = 10_000;
/// Marks a `401` that was held back, so clients and tests can tell.
pub const SLOWED_HEADER: &str = "x-reins-auth-slowed";

/// The browser security headers on every answer: no framing (clickjacking
/// of the approvals page), no MIME sniffing, no referrer leaking run ids,
/// and scripts and styles only from this server.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Why the network settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "[server] {key}: {value:?} is not an origin; write scheme://host[:port] (http or https, no path)"
    )]
    BadOrigin { key: &'static str, value: String },
    #[error("[server] allowed_hosts: {0:?} is not a host name")]
    BadHost(String),
}

/// Who may reach the server, built once from `[server]`.
pub struct NetPolicy {
    /// No tokens: `Host` is checked, since nothing else stands between a
    /// rebound DNS name and the API.
    open: bool,
    hosts: HashSet<String>,
    /// Configured origins, both `allowed_origins` and `[server.cors]`.
    origins: HashSet<String>,
    /// With tokens, browsers cannot attach them cross-origin unless CORS
    /// lets them, so `Origin` only needs checking when CORS is on.
    check_origin: bool,
    cors: Option<CorsLayer>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
}

impl NetPolicy {
    pub fn from_settings(settings: &ServerSettings, open: bool) -> Result<Self, NetError> {
        let mut hosts = HashSet::new();
        for h in &settings.allowed_hosts {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', ' ']) {
                return Err(NetError::BadHost(h));
            }
            hosts.insert(h);
        }
        let mut origins = HashSet::new();
        for o in &settings.allowed_origins {
            origins.insert(normalize_origin(o).ok_or_else(|| bad_origin("allowed_origins", o))?);
        }
        let cors = match &settings.cors {
            None => None,
            Some(c) => {
                let mut values = Vec::new();
                for o in &c.allowed_origins {
                    let n =
                        normalize_origin(o).ok_or_else(|| bad_origin("cors.allowed_origins", o))?;
                    values.push(
                        HeaderValue::from_str(&n)
                            .map_err(|_| bad_origin("cors.allowed_origins", o))?,
                    );
                    origins.insert(n);
                }
                Some(cors_layer(values, c.max_age_s))
            }
        };
        Ok(Self {
            open,
            hosts,
            origins,
            check_origin: open || cors.is_some(),
            cors,
            failures: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(FAILURES_PER_SECOND).allow_burst(FAILURE_BURST),
            ),
        })
    }

    /// Refuses a request whose `Host` (open server only) or `Origin` is not
    /// allowed. A request without `Host` passes: browsers always send it, so
    /// its absence is not a rebinding.
    fn admit(&self, req: &Request) -> Result<(), ApiError> {
        let headers = req.headers();
        let host = match headers.get(header::HOST) {
            Some(v) => Some(v.to_str().unwrap_or("(not ASCII)").to_ascii_lowercase()),
            None => req
                .uri()
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase()),
        };
        if self.open
            && let Some(host) = &host
            && !self.host_allowed(host)
        {
            return Err(refused(Refused::Host, host));
        }
        if self.check_origin
            && let Some(origin) = headers.get(header::ORIGIN)
        {
            let origin = origin
                .to_str()
                .unwrap_or("(not ASCII)")
                .to_ascii_lowercase();
            if !self.origin_allowed(&origin, host.as_deref()) {
                return Err(refused(Refused::Origin, &origin));
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        LOOPBACK_NAMES.contains(&name) || self.hosts.contains(name) || self.hosts.contains(host)
    }

    /// Loopback origins, the server's own pages (the origin's authority is
    /// the `Host` asked for) and configured origins.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let Some(authority) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        LOOPBACK_NAMES.contains(&host_name(authority))
            || host == Some(authority)
            || normalize_origin(origin).is_some_and(|o| self.origins.contains(&o))
    }

    /// Charges a failed authentication to `ip`; once over its quota, waits
    /// until the quota allows another (at most [`MAX_DELAY`]). True when it
    /// waited.
    async fn slow_down(&self, ip: IpAddr) -> bool {
        let key = client_key(ip);
        if self.failures.len() > MAX_TRACKED {
            self.failures.retain_recent();
        }
        if self.failures.check_key(&key).is_ok() {
            return false;
        }
        let _ = tokio::time::timeout(MAX_DELAY, self.failures.until_key_ready(&key)).await;
        true
    }
}

/// The routes with the network layers around them, outermost last.
pub fn layer(routes: Router, net: &Arc<NetPolicy>) -> Router {
    let mut app = routes;
    if let Some(cors) = &net.cors {
        app = app.layer(cors.clone());
    }
    app = app
        .layer(middleware::from_fn_with_state(net.clone(), guard))
        .layer(middleware::from_fn_with_state(
            net.clone(),
            slow_auth_failures,
        ));
    for (name, value) in SECURITY_HEADERS {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    app
}

async fn guard(State(net): State<Arc<NetPolicy>>, req: Request, next: Next) -> Response {
    match net.admit(&req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Only `401`s are held, after the handler answered, so a valid caller is
/// never slowed, whatever its address did before. A request without a peer
/// address (the router driven in-process) is not charged.
async fn slow_auth_failures(
    State(net): State<Arc<NetPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(ip) = peer
        && net.slow_down(ip).await
    {
        metrics::counter!(reins_runtime::metric_names::AUTH_FAILURES_SLOWED_TOTAL).increment(1);
        tracing::info!(%ip, "authentication failures from this address are being slowed");
        response
            .headers_mut()
            .insert(SLOWED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

fn cors_layer(origins: Vec<HeaderValue>, max_age_s: u64) -> CorsLayer {
    let expose = [
        "x-reins-run-id",
        "x-reins-status",
        "x-reins-attempts",
        "x-reins-degraded",
        "x-reins-idempotent-replay",
        "retry-after",
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        // Listed origins are trusted callers; the headers they send are the
        // API's own (token, session, SDK headers), which vary by client.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list(expose.map(HeaderName::from_static)))
        .max_age(Duration::from_secs(max_age_s))
}

/// `scheme://host[:port]` in lowercase without a default port, as browsers
/// send it; `None` when `text` is not such an origin.
fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = text.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// The name in `host[:port]`, brackets kept for IPv6 (`[::1]:8080` → `[::1]`).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority.split(':').next().unwrap_or(authority)
    }
}

/// The limiter's (and the per-address connection cap's) key: an IPv6 client usually owns a whole /64, so its
/// failures are counted together; IPv4-mapped addresses count as IPv4.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn bad_origin(key: &'static str, value: &str) -> NetError {
    NetError::BadOrigin {
        key,
        value: value.to_owned(),
    }
}

/// The `Host` or `Origin` a request was refused for, named in the answer.
#[derive(Clone, Copy)]
enum Refused {
    Host,
    Origin,
}

fn refused(header: Refused, value: &str) -> ApiError {
    let (name, kind, label, message) = match header {
        Refused::Host => (
            "Host",
            "forbidden_host",
            "host",
            format!(
                "Host `{value}` is not a loopback name; with no [[server.tokens]] this server answers only to \
                 localhost, 127.0.0.1 and [::1], so that a page that rebinds its DNS name to this address \
                 cannot call it; add the name to [server] allowed_hosts, or configure tokens"
            ),
        ),
        Refused::Origin => (
            "Origin",
            "forbidden_origin",
            "origin",
            format!(
                "Origin `{value}` is not allowed; add it to [server] allowed_origins \
                 (or [server.cors] allowed_origins to let its pages read answers)"
            ),
        ),
    };
    metrics::counter!(reins_runtime::metric_names::REQUESTS_REFUSED_TOTAL, "header" => label)
        .increment(1);
    ApiError::new(StatusCode::FORBIDDEN, kind, message).with("header", serde_json::json!(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_hosts_normalize_like_browsers_send_them() {
        assert_eq!(
            normalize_origin("HTTPS://App.Example:443/").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            normalize_origin("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
        assert_eq!(normalize_origin("app.example"), None);
        assert_eq!(normalize_origin("https://app.example/path"), None);
        assert_eq!(normalize_origin("null"), None);
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("localhost:3000"), "localhost");
        assert_eq!(host_name("evil.example"), "evil.example");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
    }
}
