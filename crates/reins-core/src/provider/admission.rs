//! Admission to one provider: what may be sent to its upstream now, and
//! who waits.
//!
//! A provider's upstream has a capacity (its own concurrency queue, a
//! hosted API's rate limits). Reins keeps under it instead of finding it by
//! error: calls out at once (`max_in_flight`, learned when `adaptive`),
//! requests and tokens per minute (`rpm`, `tpm`, with `governor`), and the
//! upstream's own word: a 429, or a 503 with `Retry-After`, marks the
//! provider *saturated* until then. That is backpressure, not an outage, so
//! it never reaches the circuit breaker.
//!
//! A call that cannot go now waits in a bounded queue, FIFO per tenant and
//! round-robin across tenants, so one tenant cannot fill it for the others.
//! A call whose expected wait is past its deadline, or that finds the queue
//! full, is refused at once with how long to wait: a caller gets a fast 429
//! instead of a slow timeout.
//!
//! Slots are handed over under one mutex by whoever frees capacity (a call
//! that ends, or a timer when a saturation or a rate window ends): no task
//! polls.

use crate::config::{HttpConfig, OnSaturated, ProviderConfig};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A provider's limits and queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionSettings {
    /// Calls out at once; `None`: no limit.
    pub max_in_flight: Option<u32>,
    /// Learn the in-flight limit (AIMD) under `max_in_flight`.
    pub adaptive: bool,
    pub rpm: Option<NonZeroU32>,
    pub tpm: Option<NonZeroU32>,
    /// Calls that may wait at once.
    pub queue_size: usize,
    /// Saturation after a 429 that did not say for how long.
    pub saturation: Duration,
    /// The longest saturation a `Retry-After` may ask for.
    pub max_saturation: Duration,
}

impl AdmissionSettings {
    /// No limits, no queue: every call goes at once (scripted providers,
    /// tests); a 429 still marks the provider saturated for a second.
    pub const UNLIMITED: AdmissionSettings = AdmissionSettings {
        max_in_flight: None,
        adaptive: false,
        rpm: None,
        tpm: None,
        queue_size: 256,
        saturation: Duration::from_secs(1),
        max_saturation: Duration::from_secs(60),
    };

    pub fn from_config(c: &HttpConfig) -> AdmissionSettings {
        AdmissionSettings {
            max_in_flight: c.max_in_flight.filter(|n| *n > 0),
            adaptive: c.adaptive,
            rpm: c.rpm.and_then(NonZeroU32::new),
            tpm: c.tpm.and_then(NonZeroU32::new),
            queue_size: c.queue_size as usize,
            saturation: Duration::from_millis(c.saturation_ms.max(1)),
            max_saturation: Duration::from_millis(c.max_saturation_ms.max(1)),
        }
    }

    pub fn for_config(config: &ProviderConfig) -> AdmissionSettings {
        config
            .http()
            .map_or(AdmissionSettings::UNLIMITED, AdmissionSettings::from_config)
    }
}

/// Why a call may not go to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The provider is saturated and the pipeline falls back rather than wait.
    Saturated { retry_after: Duration },
    /// The queue is full.
    QueueFull { retry_after: Duration },
    /// The wait would outlast the call's deadline (estimated before
    /// queueing, or found out while waiting).
    PastDeadline { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(&self) -> Duration {
        match *self {
            Refusal::Saturated { retry_after }
            | Refusal::QueueFull { retry_after }
            | Refusal::PastDeadline { retry_after } => retry_after,
        }
    }

    /// A stable short name for metrics and messages.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Saturated { .. } => "saturated",
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::PastDeadline { .. } => "past_deadline",
        }
    }
}

/// What a call asks of the admission.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Whose turn it is in the queue (the caller's tenant, else its subject).
    pub tenant: &'a str,
    /// Estimated tokens (for `tpm`).
    pub tokens: u32,
    pub deadline: Option<Instant>,
    pub on_saturated: OnSaturated,
}

/// A point-in-time view, for `GET /v1/providers`.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionSnapshot {
    pub in_flight: u32,
    /// The in-flight limit now (learned when adaptive); `None`: no limit.
    pub limit: Option<u32>,
    pub queued: usize,
    /// While saturated: ms until calls go again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saturated_for_ms: Option<u64>,
    /// Times the upstream pushed back (429, 503 with `Retry-After`).
    pub saturations: u64,
    /// Calls refused without being sent, by reason.
    pub refused: HashMap<&'static str, u64>,
}

struct Waiter {
    id: u64,
    tokens: u32,
    tx: oneshot::Sender<()>,
}

struct State {
    in_flight: u32,
    /// The in-flight limit; fractional so additive increase can be gradual.
    limit: f64,
    saturated_until: Option<Instant>,
    /// Waiting calls per tenant, FIFO.
    queues: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Tenants with waiting calls, in the order their turn comes.
    turns: VecDeque<Arc<str>>,
    queued: usize,
    next_id: u64,
    /// A wake-up is scheduled for this instant.
    timer: Option<Instant>,
    /// Moving average of a call's time upstream, in µs (0: none seen yet).
    latency_us: f64,
    last_decrease: Option<Instant>,
    saturations: u64,
    refused: HashMap<&'static str, u64>,
}

/// The admission's metrics, registered once: the refusal path runs tens of
/// thousands of times a second under a flood, so it must not build a
/// labelled key per call.
struct Meters {
    in_flight: metrics::Gauge,
    queued: metrics::Gauge,
    saturated: metrics::Gauge,
    saturations: metrics::Counter,
    /// By [`Refusal::reason`]: saturated, queue_full, past_deadline.
    shed: [metrics::Counter; 3],
}

impl Meters {
    fn new(provider: &str) -> Meters {
        use reins_runtime::metric_names as m;
        let p = provider.to_owned();
        let shed = |reason: &'static str| metrics::counter!(m::PROVIDER_SHED_TOTAL, "provider" => p.clone(), "reason" => reason);
        Meters {
            in_flight: metrics::gauge!(m::PROVIDER_IN_FLIGHT, "provider" => p.clone()),
            queued: metrics::gauge!(m::PROVIDER_QUEUED, "provider" => p.clone()),
            saturated: metrics::gauge!(m::PROVIDER_SATURATED, "provider" => p.clone()),
            saturations: metrics::counter!(m::PROVIDER_SATURATIONS_TOTAL, "provider" => p.clone()),
            shed: [shed("saturated"), shed("queue_full"), shed("past_deadline")],
        }
    }
}

/// One provider's admission (see the module docs). Shared by every
/// pipeline that calls the provider.
pub struct Admission {
    name: String,
    meters: Meters,
    settings: AdmissionSettings,
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    state: Mutex<State>,
    /// To hand a timer task a way back without keeping the admission alive.
    this: Weak<Admission>,
}

impl Admission {
    pub fn new(name: &str, settings: AdmissionSettings) -> Arc<Admission> {
        Arc::new_cyclic(|this| Admission {
            name: name.to_owned(),
            meters: Meters::new(name),
            rpm: settings
                .rpm
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
            tpm: settings
                .tpm
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
            clock: DefaultClock::default(),
            state: Mutex::new(State {
                in_flight: 0,
                limit: settings.max_in_flight.map_or(f64::INFINITY, f64::from),
                saturated_until: None,
                queues: HashMap::new(),
                turns: VecDeque::new(),
                queued: 0,
                next_id: 0,
                timer: None,
                latency_us: 0.0,
                last_decrease: None,
                saturations: 0,
                refused: HashMap::new(),
            }),
            settings,
            this: this.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one call: at once, after a wait in the queue, or a refusal.
    pub async fn acquire(&self, ask: Ask<'_>) -> Result<Slot, Refusal> {
        let tokens = self.clamp_tokens(ask.tokens);
        let (id, tenant, rx) = {
            let mut s = self.lock();
            let now = Instant::now();
            if s.queued == 0 && self.may_start(&s, now) && self.take_rate(tokens).is_ok() {
                s.in_flight += 1;
                self.gauges(&s);
                return Ok(self.slot(tokens));
            }
            if let Some(r) = self.refusal(&s, now, ask.deadline, ask.on_saturated) {
                self.count_refusal(&mut s, r);
                return Err(r);
            }
            let (tx, rx) = oneshot::channel();
            let id = s.next_id;
            s.next_id += 1;
            let tenant: Arc<str> = Arc::from(ask.tenant);
            let queue = s.queues.entry(tenant.clone()).or_default();
            if queue.is_empty() {
                s.turns.push_back(tenant.clone());
            }
            if let Some(q) = s.queues.get_mut(&tenant) {
                q.push_back(Waiter { id, tokens, tx });
            }
            s.queued += 1;
            self.dispatch(&mut s, now);
            self.gauges(&s);
            (id, tenant, rx)
        };
        let mut waiting = Waiting {
            admission: self,
            tenant,
            id,
            rx,
        };
        let granted = match ask.deadline {
            None => (&mut waiting.rx).await.is_ok(),
            Some(d) => matches!(
                tokio::time::timeout_at(d.into(), &mut waiting.rx).await,
                Ok(Ok(()))
            ),
        };
        if granted {
            waiting.id = u64::MAX;
            return Ok(self.slot(tokens));
        }
        let r = Refusal::PastDeadline {
            retry_after: self.expected_wait(&self.lock(), Instant::now()),
        };
        self.count_refusal(&mut self.lock(), r);
        Err(r)
    }

    /// Whether a call would be refused at once (queue full, or its expected
    /// wait past `deadline`): lets a server shed a request before it does
    /// any work for it. Takes nothing.
    pub fn would_refuse(
        &self,
        deadline: Option<Instant>,
        on_saturated: OnSaturated,
    ) -> Option<Refusal> {
        let s = self.lock();
        let now = Instant::now();
        if s.queued == 0 && self.may_start(&s, now) {
            return None;
        }
        self.refusal(&s, now, deadline, on_saturated)
    }

    /// Why a call that cannot start now may not wait either, if it may not.
    fn refusal(
        &self,
        s: &State,
        now: Instant,
        deadline: Option<Instant>,
        on_saturated: OnSaturated,
    ) -> Option<Refusal> {
        let wait = self.expected_wait(s, now);
        if on_saturated == OnSaturated::Fallback && s.saturated_until.is_some_and(|u| now < u) {
            Some(Refusal::Saturated { retry_after: wait })
        } else if s.queued >= self.settings.queue_size {
            Some(Refusal::QueueFull { retry_after: wait })
        } else if deadline.is_some_and(|d| now + wait > d) {
            Some(Refusal::PastDeadline { retry_after: wait })
        } else {
            None
        }
    }

    /// The upstream pushed back: no call goes until `for_` has passed
    /// (bounded by `max_saturation`; the default when it did not say).
    pub fn saturate(&self, asked: Option<Duration>) {
        let hold = asked
            .unwrap_or(self.settings.saturation)
            .min(self.settings.max_saturation);
        let mut s = self.lock();
        let now = Instant::now();
        let until = now + hold;
        if s.saturated_until.is_none_or(|u| u < until) {
            if s.saturated_until.is_none_or(|u| u <= now) {
                s.saturations += 1;
                self.meters.saturations.increment(1);
                tracing::info!(provider = %self.name, ?hold, "provider saturated: calls wait or fall back");
            }
            s.saturated_until = Some(until);
        }
        self.decrease(&mut s, now);
        self.meters.saturated.set(1.0);
        self.dispatch(&mut s, now);
    }

    pub fn snapshot(&self) -> AdmissionSnapshot {
        let s = self.lock();
        let now = Instant::now();
        AdmissionSnapshot {
            in_flight: s.in_flight,
            limit: s.limit.is_finite().then(|| s.limit.floor().max(1.0) as u32),
            queued: s.queued,
            saturated_for_ms: s
                .saturated_until
                .filter(|u| *u > now)
                .map(|u| u.saturating_duration_since(now).as_millis() as u64),
            saturations: s.saturations,
            refused: s.refused.clone(),
        }
    }

    fn slot(&self, tokens: u32) -> Slot {
        Slot {
            admission: self.this.upgrade(),
            tokens,
            started: Instant::now(),
        }
    }

    fn clamp_tokens(&self, tokens: u32) -> u32 {
        // A call larger than a minute's budget could never go: it counts as
        // the whole budget instead.
        let cap = self.settings.tpm.map_or(u32::MAX, NonZeroU32::get);
        tokens.clamp(1, cap)
    }

    fn limit_now(s: &State) -> f64 {
        s.limit.floor().max(1.0)
    }

    /// Not saturated and under the in-flight limit (rates are taken apart:
    /// taking them consumes them).
    fn may_start(&self, s: &State, now: Instant) -> bool {
        s.saturated_until.is_none_or(|u| u <= now) && f64::from(s.in_flight) < Self::limit_now(s)
    }

    /// Takes one request and `tokens` from the rate limits, or says how
    /// long until they would be there.
    fn take_rate(&self, tokens: u32) -> Result<(), Duration> {
        let now = self.clock.now();
        if let Some(tpm) = &self.tpm {
            let n = NonZeroU32::new(tokens).unwrap_or(NonZeroU32::MIN);
            match tpm.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => return Err(not_until.wait_time_from(now)),
                // Clamped to the burst: cannot happen; let it go rather than stall.
                Err(_) => {}
            }
        }
        if let Some(rpm) = &self.rpm
            && let Err(not_until) = rpm.check()
        {
            return Err(not_until.wait_time_from(now));
        }
        Ok(())
    }

    /// How long a call queued now would wait: the saturation left, the
    /// batches ahead of it at the in-flight limit, the request rate.
    fn expected_wait(&self, s: &State, now: Instant) -> Duration {
        let saturation = s
            .saturated_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        let ahead = s.queued as f64 + 1.0;
        let batches = if s.limit.is_finite() && s.latency_us > 0.0 {
            Duration::from_micros((ahead / Self::limit_now(s) * s.latency_us) as u64)
        } else {
            Duration::ZERO
        };
        let rate = self.settings.rpm.map_or(Duration::ZERO, |rpm| {
            Duration::from_secs_f64(ahead * 60.0 / f64::from(rpm.get()))
        });
        saturation + batches.max(rate)
    }

    /// Hands free capacity to waiting calls, tenant by tenant; arms a timer
    /// when what blocks them is time (a saturation, a rate window).
    fn dispatch(&self, s: &mut State, now: Instant) {
        while s.queued > 0 {
            if let Some(until) = s.saturated_until {
                if now < until {
                    self.wake_at(s, until);
                    return;
                }
                s.saturated_until = None;
                self.meters.saturated.set(0.0);
            }
            if f64::from(s.in_flight) >= Self::limit_now(s) {
                return;
            }
            let Some(tenant) = s.turns.pop_front() else {
                return;
            };
            let Some(queue) = s.queues.get_mut(&tenant) else {
                continue;
            };
            // Calls that gave up (deadline, disconnect) leave as they are met.
            while queue.front().is_some_and(|w| w.tx.is_closed()) {
                queue.pop_front();
                s.queued -= 1;
            }
            let Some(tokens) = queue.front().map(|w| w.tokens) else {
                s.queues.remove(&tenant);
                continue;
            };
            if let Err(wait) = self.take_rate(tokens) {
                s.turns.push_front(tenant);
                self.wake_at(s, now + wait);
                return;
            }
            let Some(waiter) = queue.pop_front() else {
                continue;
            };
            if queue.is_empty() {
                s.queues.remove(&tenant);
            } else {
                s.turns.push_back(tenant);
            }
            s.queued -= 1;
            if waiter.tx.send(()).is_ok() {
                s.in_flight += 1;
            }
        }
    }

    fn wake_at(&self, s: &mut State, at: Instant) {
        if s.timer.is_some_and(|t| t <= at) {
            return;
        }
        s.timer = Some(at);
        let this = self.this.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            if let Some(admission) = this.upgrade() {
                let mut s = admission.lock();
                if s.timer == Some(at) {
                    s.timer = None;
                }
                admission.dispatch(&mut s, Instant::now());
                admission.gauges(&s);
            }
        });
    }

    /// A slot freed: its call ended (`outcome`) or was abandoned.
    fn release(&self, slot: &Slot, ended: Option<Ended>) {
        let mut s = self.lock();
        let now = Instant::now();
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(ended) = ended {
            if let Some(used) = ended.tokens_used {
                self.correct_tokens(slot.tokens, used);
            }
            match ended.signal {
                Signal::Ok => {
                    let us = now.saturating_duration_since(slot.started).as_micros() as f64;
                    s.latency_us = if s.latency_us == 0.0 {
                        us
                    } else {
                        0.8 * s.latency_us + 0.2 * us
                    };
                    if self.settings.adaptive
                        && let Some(max) = self.settings.max_in_flight
                        && f64::from(s.in_flight + 1) * 2.0 >= Self::limit_now(&s)
                    {
                        s.limit = (s.limit + 1.0 / s.limit).min(f64::from(max));
                    }
                }
                Signal::Overloaded => self.decrease(&mut s, now),
                Signal::Neutral => {}
            }
        }
        self.dispatch(&mut s, now);
        self.gauges(&s);
    }

    /// Multiplicative decrease, at most once per call's time upstream (the
    /// 429s of one burst are one signal, not sixty-four).
    fn decrease(&self, s: &mut State, now: Instant) {
        if !self.settings.adaptive {
            return;
        }
        let spacing = Duration::from_micros(s.latency_us.max(100_000.0) as u64);
        if s.last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < spacing)
        {
            return;
        }
        s.last_decrease = Some(now);
        s.limit = (s.limit * 0.9).max(1.0);
        tracing::debug!(provider = %self.name, limit = s.limit, "adaptive limit lowered");
    }

    /// The upstream counted more tokens than the estimate: take the rest
    /// (best effort; an overestimate cannot be given back to `governor`).
    fn correct_tokens(&self, estimated: u32, used: u64) {
        let (Some(tpm), Ok(used)) = (&self.tpm, u32::try_from(used)) else {
            return;
        };
        if let Some(extra) = NonZeroU32::new(used.saturating_sub(estimated)) {
            let cap = self.settings.tpm.map_or(NonZeroU32::MIN, |t| t);
            let _ = tpm.check_n(extra.min(cap));
        }
    }

    /// Counts a refusal made for this provider elsewhere (a request shed at
    /// the door, before any call was asked for).
    pub fn count_shed(&self, r: Refusal) {
        self.count_refusal(&mut self.lock(), r);
    }

    fn count_refusal(&self, s: &mut State, r: Refusal) {
        *s.refused.entry(r.reason()).or_default() += 1;
        let i = match r {
            Refusal::Saturated { .. } => 0,
            Refusal::QueueFull { .. } => 1,
            Refusal::PastDeadline { .. } => 2,
        };
        self.meters.shed[i].increment(1);
    }

    fn gauges(&self, s: &State) {
        self.meters.in_flight.set(f64::from(s.in_flight));
        self.meters.queued.set(s.queued as f64);
    }
}

/// A call waiting in the queue; dropped unanswered (deadline, cancelled),
/// it leaves the queue, and a slot handed to it just then is given back.
struct Waiting<'a> {
    admission: &'a Admission,
    tenant: Arc<str>,
    /// `u64::MAX` once the slot was taken.
    id: u64,
    rx: oneshot::Receiver<()>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.id == u64::MAX {
            return;
        }
        let mut s = self.admission.lock();
        let mut removed = false;
        if let Some(q) = s.queues.get_mut(&self.tenant)
            && let Some(i) = q.iter().position(|w| w.id == self.id)
        {
            q.remove(i);
            removed = true;
            if q.is_empty() {
                s.queues.remove(&self.tenant);
                s.turns.retain(|t| *t != self.tenant);
            }
        }
        if removed {
            s.queued -= 1;
        } else if self.rx.try_recv().is_ok() {
            // Granted as it gave up: the slot goes to the next in line.
            s.in_flight = s.in_flight.saturating_sub(1);
            self.admission.dispatch(&mut s, Instant::now());
        }
        self.admission.gauges(&s);
    }
}

/// What a finished call says to the admission.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub signal: Signal,
    /// Tokens the upstream reported using, to correct the `tpm` estimate.
    pub tokens_used: Option<u64>,
}

/// How the call went, as the in-flight limit learns from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered: its latency counts.
    Ok,
    /// Pushed back or timed out: the limit may be too high.
    Overloaded,
    /// Says nothing about capacity (a 400, a broken answer).
    Neutral,
}

/// Permission for one call upstream; give it back with [`Slot::end`]. A
/// slot dropped without an end (the call was cancelled) frees its place.
pub struct Slot {
    admission: Option<Arc<Admission>>,
    tokens: u32,
    started: Instant,
}

impl Slot {
    pub fn end(mut self, ended: Ended) {
        if let Some(a) = self.admission.take() {
            a.release(&self, Some(ended));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            a.release(self, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(n: u32, queue: usize) -> Arc<Admission> {
        Admission::new(
            "p",
            AdmissionSettings {
                max_in_flight: Some(n),
                queue_size: queue,
                ..AdmissionSettings::UNLIMITED
            },
        )
    }

    fn ask(tenant: &str) -> Ask<'_> {
        Ask {
            tenant,
            tokens: 1,
            deadline: None,
            on_saturated: OnSaturated::Queue,
        }
    }

    const OK: Ended = Ended {
        signal: Signal::Ok,
        tokens_used: None,
    };

    #[tokio::test]
    async fn calls_over_the_limit_wait_and_the_queue_is_bounded() {
        let a = limited(1, 1);
        let first = a.acquire(ask("t")).await.unwrap();
        let a2 = a.clone();
        let second = tokio::spawn(async move { a2.acquire(ask("t")).await.map(|s| s.end(OK)) });
        while a.snapshot().queued == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            a.acquire(ask("t")).await,
            Err(Refusal::QueueFull { .. })
        ));
        first.end(OK);
        assert_eq!(second.await.unwrap(), Ok(()));
        let s = a.snapshot();
        assert_eq!((s.in_flight, s.queued, s.refused["queue_full"]), (0, 0, 1));
    }

    #[tokio::test]
    async fn tenants_take_turns() {
        let a = limited(1, 100);
        let hold = a.acquire(ask("x")).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Tenant `flood` queues five calls before `quiet` queues one.
        for t in ["flood", "flood", "flood", "flood", "flood", "quiet"] {
            let (a2, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = a2.acquire(ask(t)).await.unwrap();
                order.lock().unwrap().push(t);
                slot.end(OK);
            }));
            let queued = tasks.len();
            while a.snapshot().queued < queued {
                tokio::task::yield_now().await;
            }
        }
        hold.end(OK);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let quiet = order.iter().position(|t| *t == "quiet").unwrap();
        assert!(
            quiet <= 1,
            "the quiet tenant went second at the latest, not last: {order:?}"
        );
    }

    #[tokio::test]
    async fn a_saturated_provider_holds_calls_then_lets_them_go() {
        let a = Admission::new("p", AdmissionSettings::UNLIMITED);
        a.saturate(Some(Duration::from_millis(50)));
        let fallback = Ask {
            on_saturated: OnSaturated::Fallback,
            ..ask("t")
        };
        assert!(matches!(
            a.acquire(fallback).await,
            Err(Refusal::Saturated { .. })
        ));
        // Queued: goes once the saturation is over.
        a.acquire(ask("t")).await.unwrap().end(OK);
        assert_eq!(a.snapshot().saturations, 1);
        // A wait past the deadline is refused at once.
        a.saturate(Some(Duration::from_secs(30)));
        let soon = Ask {
            deadline: Some(Instant::now() + Duration::from_secs(1)),
            ..ask("t")
        };
        assert!(matches!(
            a.acquire(soon).await,
            Err(Refusal::PastDeadline { .. })
        ));
        assert!(a.would_refuse(soon.deadline, OnSaturated::Queue).is_some());
        assert_eq!(a.snapshot().queued, 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let a = limited(1, 10);
        let hold = a.acquire(ask("t")).await.unwrap();
        let a2 = a.clone();
        let waiting = tokio::spawn(async move { a2.acquire(ask("t")).await.is_ok() });
        while a.snapshot().queued == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(a.snapshot().queued, 0);
        drop(hold);
        assert_eq!(a.snapshot().in_flight, 0);
        a.acquire(ask("t")).await.unwrap().end(OK);
    }

    #[tokio::test]
    async fn the_adaptive_limit_drops_on_pushback_and_grows_back() {
        let a = Admission::new(
            "p",
            AdmissionSettings {
                max_in_flight: Some(10),
                adaptive: true,
                ..AdmissionSettings::UNLIMITED
            },
        );
        a.saturate(Some(Duration::from_millis(1)));
        a.saturate(Some(Duration::from_millis(1)));
        assert_eq!(
            a.snapshot().limit,
            Some(9),
            "one burst of 429s is one decrease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        for _ in 0..100 {
            let slots: Vec<Slot> = futures_slots(&a, 9).await;
            for s in slots {
                s.end(OK);
            }
        }
        assert_eq!(a.snapshot().limit, Some(10), "never above max_in_flight");
    }

    async fn futures_slots(a: &Arc<Admission>, n: usize) -> Vec<Slot> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(a.acquire(ask("t")).await.unwrap());
        }
        v
    }

    #[tokio::test]
    async fn rpm_spaces_calls() {
        let a = Admission::new(
            "p",
            AdmissionSettings {
                rpm: NonZeroU32::new(1),
                ..AdmissionSettings::UNLIMITED
            },
        );
        a.acquire(ask("t")).await.unwrap().end(OK);
        // The next one is a second away: past a 100 ms deadline.
        let soon = Ask {
            deadline: Some(Instant::now() + Duration::from_millis(100)),
            ..ask("t")
        };
        assert!(matches!(
            a.acquire(soon).await,
            Err(Refusal::PastDeadline { .. })
        ));
    }
}
