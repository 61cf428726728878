//! An upstream with a capacity, as hosted APIs, vLLM and llama.cpp queues
//! behave: at most `capacity` chat completions at once, each held for
//! `hold`; past that, `429` with `Retry-After`. It counts what it served and
//! refused, the most calls it ever held at once, and the order in which it
//! took calls (by the first user message), so tests assert on what a busy
//! model really saw.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicU64,
    refused: AtomicU64,
    order: Mutex<Vec<String>>,
    /// When each answer was sent.
    answered: Mutex<Vec<std::time::Instant>>,
}

#[derive(Clone)]
struct Busy {
    capacity: usize,
    hold: Duration,
    retry_after_s: u64,
    counts: Arc<Counts>,
}

/// The upstream; it serves until the test process ends.
pub struct BusyUpstream {
    base: String,
    counts: Arc<Counts>,
}

impl BusyUpstream {
    pub async fn start(capacity: usize, hold: Duration, retry_after_s: u64) -> BusyUpstream {
        let counts = Arc::new(Counts::default());
        let state = Busy {
            capacity,
            hold,
            retry_after_s,
            counts: counts.clone(),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .with_state(state);
        BusyUpstream {
            base: crate::server::listen(app).await,
            counts,
        }
    }

    /// An OpenAI provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// Completions answered.
    pub fn served(&self) -> u64 {
        self.counts.served.load(Ordering::SeqCst)
    }

    /// Calls answered 429.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// The most calls held at once.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// Completions answered by `when`.
    pub fn served_by(&self, when: std::time::Instant) -> usize {
        self.counts
            .answered
            .lock()
            .expect("answered")
            .iter()
            .filter(|t| **t <= when)
            .count()
    }

    /// The first user message of each call taken, in the order taken.
    pub fn order(&self) -> Vec<String> {
        self.counts.order.lock().expect("order").clone()
    }
}

/// Leaves the count when the call ends, answered or abandoned.
struct Held(Arc<Counts>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn complete(State(busy): State<Busy>, Json(body): Json<Value>) -> Response {
    let c = &busy.counts;
    let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let held = Held(c.clone());
    if now > busy.capacity {
        drop(held);
        c.refused.fetch_add(1, Ordering::SeqCst);
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {"message": "the server is busy", "type": "rate_limit_error"}})),
        )
            .into_response();
        if let Ok(v) = busy.retry_after_s.to_string().parse() {
            response.headers_mut().insert("retry-after", v);
        }
        return response;
    }
    c.peak.fetch_max(now, Ordering::SeqCst);
    c.order
        .lock()
        .expect("order")
        .push(crate::model::first_user_text(&body));
    tokio::time::sleep(busy.hold).await;
    c.served.fetch_add(1, Ordering::SeqCst);
    c.answered
        .lock()
        .expect("answered")
        .push(std::time::Instant::now());
    drop(held);
    let model = body["model"].as_str().unwrap_or("busy");
    Json(crate::model::completion_from(
        model,
        crate::model::assistant("{\"ok\": true}"),
    ))
    .into_response()
}
