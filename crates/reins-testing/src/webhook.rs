//! A sink for webhook executors on loopback. It records every delivery
//! with its idempotency key, applies each key once (as a well-behaved
//! receiver would), and can be told to fail the next requests or to take
//! its time, so tests see retries, re-sends after crashes and approvals
//! end to end, and assert that every side effect happened exactly once.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `Idempotency-Key` header; empty when there was none.
    pub key: String,
    /// The W3C `traceparent` header; empty when there was none.
    pub traceparent: String,
    pub body: Value,
    pub at: Instant,
    /// Whether the sink accepted it (it had not been told to fail it).
    pub accepted: bool,
}

impl Delivery {
    /// The `order` argument of a refund, the unit the tests count.
    pub fn order(&self) -> &str {
        self.body["arguments"]["order"].as_str().unwrap_or_default()
    }
}

type Delay = Box<dyn Fn(&Delivery) -> Duration + Send + Sync>;

#[derive(Default)]
struct Inner {
    deliveries: Mutex<Vec<Delivery>>,
    fail_next: AtomicU32,
    delay: Option<Delay>,
}

/// The sink. Clones share it.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<Inner>,
    url: String,
}

impl Sink {
    /// Starts a sink that answers at once.
    pub async fn start() -> Sink {
        Sink::serve(Inner::default()).await
    }

    /// Starts a sink that answers each accepted delivery after
    /// `delay(delivery)`; it has recorded the delivery by then, so a crash
    /// in between leaves an action applied but not answered.
    pub async fn with_delay(delay: impl Fn(&Delivery) -> Duration + Send + Sync + 'static) -> Sink {
        Sink::serve(Inner {
            delay: Some(Box::new(delay)),
            ..Inner::default()
        })
        .await
    }

    async fn serve(inner: Inner) -> Sink {
        let inner = Arc::new(inner);
        let app = axum::Router::new()
            .fallback(deliver)
            .with_state(inner.clone());
        let url = format!("{}/refund", crate::server::listen(app).await);
        Sink { inner, url }
    }

    /// The URL to configure as the executor's `url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fails the next `n` requests with 503 (a receiver that is down).
    pub fn fail_next(&self, n: u32) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every delivery so far, in order of arrival.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.deliveries.lock().expect("lock").clone()
    }

    /// The key of every request so far, failed ones included, in order.
    pub fn keys(&self) -> Vec<String> {
        self.deliveries().into_iter().map(|d| d.key).collect()
    }

    /// How many distinct keys were applied (accepted at least once).
    pub fn applied(&self) -> usize {
        self.counts_where(|d| d.accepted).len()
    }

    /// Per key, how many times it was delivered (failed requests included).
    pub fn counts(&self) -> HashMap<String, u32> {
        self.counts_where(|_| true)
    }

    fn counts_where(&self, keep: impl Fn(&Delivery) -> bool) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for d in self
            .inner
            .deliveries
            .lock()
            .expect("lock")
            .iter()
            .filter(|d| keep(d))
        {
            *out.entry(d.key.clone()).or_default() += 1;
        }
        out
    }

    /// Per refund order, its distinct keys in order of arrival: more than
    /// one means the same refund was applied twice.
    pub fn by_order(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in self.inner.deliveries.lock().expect("lock").iter() {
            let keys = out.entry(d.order().to_owned()).or_default();
            if !keys.contains(&d.key) {
                keys.push(d.key.clone());
            }
        }
        out
    }
}

async fn deliver(
    State(sink): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let accepted = sink
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err();
    let delivery = Delivery {
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        key: key.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
        accepted,
    };
    let first = {
        let mut deliveries = sink.deliveries.lock().expect("lock");
        let first = !deliveries.iter().any(|d| d.accepted && d.key == key);
        deliveries.push(delivery.clone());
        first
    };
    if !accepted {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "try again"})),
        );
    }
    if let Some(delay) = &sink.delay {
        tokio::time::sleep(delay(&delivery)).await;
    }
    let order = delivery.body["arguments"]["order"].clone();
    (
        StatusCode::OK,
        axum::Json(json!({"ok": true, "first": first, "refunded": order, "key": key})),
    )
}
