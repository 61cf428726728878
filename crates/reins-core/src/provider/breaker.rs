//! A circuit breaker (closed → open → half-open) over a sliding window of
//! call outcomes.
//!
//! - **Closed**: every call goes through; each outcome enters a window of
//!   the last `window` of time. When the window holds at least `min_calls`
//!   calls and at least `failure_rate` of them failed, the breaker opens
//!   (a trip).
//! - **Open**: calls are refused at once, without touching the upstream,
//!   until `cooldown` has passed.
//! - **Half-open**: the first `probes` calls after the cool-down go through;
//!   others are refused. If every probe succeeds the breaker closes (with an
//!   empty window); the first probe that fails opens it again (another trip).
//!
//! Outcomes that say nothing about the upstream's health (a 400, a missing
//! API key) are neutral: they neither count as failures nor decide a probe.
//! A call abandoned before it finished (its future dropped) frees its probe
//! slot and records nothing.
//!
//! The clock is passed in, so the state machine is tested without sleeping.

use crate::config::{BreakerConfig, ProviderConfig};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most outcomes a window keeps (the oldest go first).
const MAX_WINDOW: usize = 4096;

/// Settings of a breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    pub enabled: bool,
    pub failure_rate: f64,
    pub min_calls: u32,
    pub window: Duration,
    pub cooldown: Duration,
    pub probes: u32,
}

impl BreakerSettings {
    /// A breaker that never opens.
    pub const DISABLED: BreakerSettings = BreakerSettings {
        enabled: false,
        failure_rate: 1.0,
        min_calls: 1,
        window: Duration::from_secs(60),
        cooldown: Duration::ZERO,
        probes: 1,
    };

    pub fn from_config(c: &BreakerConfig) -> BreakerSettings {
        BreakerSettings {
            enabled: c.enabled,
            failure_rate: c.failure_rate,
            min_calls: c.min_calls.max(1),
            window: Duration::from_millis(c.window_ms.max(1)),
            cooldown: Duration::from_millis(c.cooldown_ms),
            probes: c.probes.max(1),
        }
    }

    pub fn for_config(config: &ProviderConfig) -> BreakerSettings {
        match config.http() {
            Some(c) => BreakerSettings::from_config(&c.breaker),
            // A script is deterministic: a breaker would only hide its errors.
            None => BreakerSettings::DISABLED,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The value of the [`reins_runtime::metric_names::BREAKER_STATE`] gauge.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// What one call said about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Says nothing about the upstream's health.
    Neutral,
}

/// A call the breaker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Failures and calls in the window when it opened.
    pub failures: u32,
    pub calls: u32,
    /// Until the next probe may go (zero when probes are already in flight).
    pub retry_in: Duration,
}

/// Permission for one call. Report its outcome with [`CircuitBreaker::record`];
/// a permit dropped unreported frees its probe slot.
#[derive(Debug)]
pub struct Permit {
    epoch: u64,
    probe: bool,
}

/// A transition a call caused, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
}

impl Transition {
    /// A transition into `open` (from closed or half-open) is a trip.
    pub fn is_trip(&self) -> bool {
        self.to == CircuitState::Open
    }
}

/// A point-in-time view of a breaker.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    pub enabled: bool,
    /// `open` whose cool-down has passed is shown as `half_open`: the next
    /// call is a probe.
    pub state: CircuitState,
    /// Calls and failures in the current window.
    pub calls: u32,
    pub failures: u32,
    pub failure_rate: f64,
    /// Times the breaker opened.
    pub trips: u64,
    /// Calls refused without touching the upstream.
    pub rejected: u64,
    /// While open: ms until the next probe may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// Half-open: probes in flight and probes that succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Closed,
    Open {
        until: Instant,
        failures: u32,
        calls: u32,
    },
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
    },
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    /// Bumped on every transition: late outcomes of an earlier phase are ignored.
    epoch: u64,
    window: VecDeque<(Instant, bool)>,
    failures: u32,
    trips: u64,
    rejected: u64,
}

impl Inner {
    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, failed)) = self.window.front() {
            if now.saturating_duration_since(at) <= window && self.window.len() <= MAX_WINDOW {
                break;
            }
            self.window.pop_front();
            if failed {
                self.failures -= 1;
            }
        }
    }

    fn state(&self) -> CircuitState {
        match self.mode {
            Mode::Closed => CircuitState::Closed,
            Mode::Open { .. } => CircuitState::Open,
            Mode::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn go(&mut self, mode: Mode) -> Transition {
        let from = self.state();
        self.mode = mode;
        self.epoch += 1;
        let to = self.state();
        if to == CircuitState::Open {
            self.trips += 1;
        }
        if to == CircuitState::Closed {
            self.window.clear();
            self.failures = 0;
        }
        Transition { from, to }
    }
}

/// The state machine. Cheap to consult: one short mutex section per call.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner {
                mode: Mode::Closed,
                epoch: 0,
                window: VecDeque::new(),
                failures: 0,
                trips: 0,
                rejected: 0,
            }),
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks to make one call at `now`: a permit, or a refusal (fail fast).
    pub fn acquire(&self, now: Instant) -> (Result<Permit, Refused>, Option<Transition>) {
        let mut inner = self.lock();
        let permit = |inner: &Inner, probe| Permit {
            epoch: inner.epoch,
            probe,
        };
        if !self.settings.enabled {
            return (Ok(permit(&inner, false)), None);
        }
        match inner.mode {
            Mode::Closed => (Ok(permit(&inner, false)), None),
            Mode::Open {
                until,
                failures,
                calls,
            } if now < until => {
                inner.rejected += 1;
                let refused = Refused {
                    failures,
                    calls,
                    retry_in: until.saturating_duration_since(now),
                };
                (Err(refused), None)
            }
            Mode::Open { .. } => {
                let t = inner.go(Mode::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                });
                (Ok(permit(&inner, true)), Some(t))
            }
            Mode::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if in_flight + succeeded < self.settings.probes {
                    inner.mode = Mode::HalfOpen {
                        in_flight: in_flight + 1,
                        succeeded,
                    };
                    (Ok(permit(&inner, true)), None)
                } else {
                    inner.rejected += 1;
                    let refused = Refused {
                        failures: inner.failures,
                        calls: inner.window.len() as u32,
                        retry_in: Duration::ZERO,
                    };
                    (Err(refused), None)
                }
            }
        }
    }

    /// Reports the outcome of a permitted call made until `now`.
    pub fn record(&self, permit: Permit, outcome: Outcome, now: Instant) -> Option<Transition> {
        if !self.settings.enabled {
            return None;
        }
        let mut inner = self.lock();
        if permit.epoch != inner.epoch {
            // The breaker changed state while this call was out: its outcome
            // belongs to a phase that is over.
            return None;
        }
        match (inner.mode, permit.probe) {
            (Mode::Closed, false) => {
                if outcome == Outcome::Neutral {
                    return None;
                }
                let failed = outcome == Outcome::Failure;
                inner.window.push_back((now, failed));
                if failed {
                    inner.failures += 1;
                }
                inner.prune(now, self.settings.window);
                let calls = inner.window.len() as u32;
                let failures = inner.failures;
                if failed
                    && calls >= self.settings.min_calls
                    && f64::from(failures) >= self.settings.failure_rate * f64::from(calls)
                {
                    return Some(inner.go(Mode::Open {
                        until: now + self.settings.cooldown,
                        failures,
                        calls,
                    }));
                }
                None
            }
            (
                Mode::HalfOpen {
                    in_flight,
                    succeeded,
                },
                true,
            ) => match outcome {
                Outcome::Failure => {
                    let (failures, calls) = (inner.failures, inner.window.len() as u32);
                    Some(inner.go(Mode::Open {
                        until: now + self.settings.cooldown,
                        failures,
                        calls,
                    }))
                }
                Outcome::Success if succeeded + 1 >= self.settings.probes => {
                    Some(inner.go(Mode::Closed))
                }
                Outcome::Success => {
                    inner.mode = Mode::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        succeeded: succeeded + 1,
                    };
                    None
                }
                Outcome::Neutral => {
                    inner.mode = Mode::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        succeeded,
                    };
                    None
                }
            },
            _ => None,
        }
    }

    /// A permit given up without an outcome (the call was cancelled).
    pub fn abandon(&self, permit: Permit) {
        let mut inner = self.lock();
        if permit.probe
            && permit.epoch == inner.epoch
            && let Mode::HalfOpen {
                in_flight,
                succeeded,
            } = inner.mode
        {
            inner.mode = Mode::HalfOpen {
                in_flight: in_flight.saturating_sub(1),
                succeeded,
            };
        }
    }

    /// Times the breaker opened.
    pub fn trips(&self) -> u64 {
        self.lock().trips
    }

    /// The state at `now` (an open breaker past its cool-down is half-open).
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut inner = self.lock();
        if matches!(inner.mode, Mode::Closed) {
            inner.prune(now, self.settings.window);
        }
        let (calls, failures) = (inner.window.len() as u32, inner.failures);
        let (state, retry_in_ms, probes) = match inner.mode {
            Mode::Closed => (CircuitState::Closed, None, None),
            Mode::Open { until, .. } if now < until => (
                CircuitState::Open,
                Some(until.saturating_duration_since(now).as_millis() as u64),
                None,
            ),
            Mode::Open { .. } => (CircuitState::HalfOpen, None, Some((0, 0))),
            Mode::HalfOpen {
                in_flight,
                succeeded,
            } => (CircuitState::HalfOpen, None, Some((in_flight, succeeded))),
        };
        BreakerSnapshot {
            enabled: self.settings.enabled,
            state,
            calls,
            failures,
            failure_rate: if calls == 0 {
                0.0
            } else {
                f64::from(failures) / f64::from(calls)
            },
            trips: inner.trips,
            rejected: inner.rejected,
            retry_in_ms,
            probes,
        }
    }
}

/// Frees the probe slot of a permit dropped unreported (a cancelled call).
pub(crate) struct PermitGuard<'a> {
    breaker: &'a CircuitBreaker,
    permit: Option<Permit>,
}

impl<'a> PermitGuard<'a> {
    pub(crate) fn new(breaker: &'a CircuitBreaker, permit: Permit) -> Self {
        PermitGuard {
            breaker,
            permit: Some(permit),
        }
    }

    pub(crate) fn record(mut self, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.permit
            .take()
            .and_then(|p| self.breaker.record(p, outcome, now))
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.breaker.abandon(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            enabled: true,
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            probes: 2,
        }
    }

    fn call(
        b: &CircuitBreaker,
        now: Instant,
        outcome: Outcome,
    ) -> Result<Option<Transition>, Refused> {
        let (permit, _) = b.acquire(now);
        Ok(b.record(permit?, outcome, now))
    }

    #[test]
    fn opens_on_the_failure_rate_once_the_window_has_enough_calls() {
        let b = CircuitBreaker::new(settings());
        let t0 = Instant::now();
        // Three failures: below min_calls, still closed.
        for _ in 0..3 {
            assert_eq!(call(&b, t0, Outcome::Failure), Ok(None));
        }
        assert_eq!(b.snapshot(t0).state, CircuitState::Closed);
        // Neutral outcomes do not count.
        assert_eq!(call(&b, t0, Outcome::Neutral), Ok(None));
        assert_eq!(b.snapshot(t0).calls, 3);
        let t = call(&b, t0, Outcome::Failure).unwrap().unwrap();
        assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
        assert_eq!(b.trips(), 1);
        let refused = b.acquire(t0 + Duration::from_secs(1)).0.unwrap_err();
        assert_eq!((refused.failures, refused.calls), (4, 4));
        assert_eq!(refused.retry_in, Duration::from_secs(4));
        assert_eq!(b.snapshot(t0).rejected, 1);
    }

    #[test]
    fn successes_keep_the_rate_low_and_old_outcomes_leave_the_window() {
        let b = CircuitBreaker::new(settings());
        let t0 = Instant::now();
        for i in 0..10 {
            let outcome = if i % 4 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(call(&b, t0, outcome), Ok(None), "call {i}");
        }
        // Ten seconds on, the old successes are gone: 2 failures of 2 calls
        // is under min_calls, the third of 4 opens.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(call(&b, later, Outcome::Failure), Ok(None));
        assert_eq!(b.snapshot(later).calls, 1);
        assert_eq!(call(&b, later, Outcome::Success), Ok(None));
        assert_eq!(call(&b, later, Outcome::Failure), Ok(None));
        assert!(
            call(&b, later, Outcome::Failure)
                .unwrap()
                .unwrap()
                .is_trip()
        );
    }

    #[test]
    fn half_open_probes_decide() {
        let b = CircuitBreaker::new(settings());
        let t0 = Instant::now();
        for _ in 0..4 {
            let _ = call(&b, t0, Outcome::Failure);
        }
        let after = t0 + Duration::from_secs(6);
        assert_eq!(b.snapshot(after).state, CircuitState::HalfOpen);
        // Two probes may go; a third is refused while they are out.
        let (p1, t) = b.acquire(after);
        assert_eq!(t.map(|t| t.to), Some(CircuitState::HalfOpen));
        let (p2, _) = b.acquire(after);
        assert!(b.acquire(after).0.is_err());
        // One success is not enough; the second closes.
        assert_eq!(b.record(p1.unwrap(), Outcome::Success, after), None);
        assert_eq!(
            b.record(p2.unwrap(), Outcome::Success, after).map(|t| t.to),
            Some(CircuitState::Closed)
        );
        assert_eq!(
            b.snapshot(after).calls,
            0,
            "a closed breaker starts a fresh window"
        );

        // Open again; a failing probe reopens at once for another cool-down.
        for _ in 0..4 {
            let _ = call(&b, after, Outcome::Failure);
        }
        assert_eq!(b.trips(), 2);
        let probe_at = after + Duration::from_secs(6);
        let (probe, _) = b.acquire(probe_at);
        let t = b
            .record(probe.unwrap(), Outcome::Failure, probe_at)
            .unwrap();
        assert_eq!((t.from, t.to), (CircuitState::HalfOpen, CircuitState::Open));
        assert_eq!(b.trips(), 3);
        assert!(b.acquire(probe_at + Duration::from_secs(4)).0.is_err());
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot_and_late_outcomes_are_ignored() {
        let mut s = settings();
        s.probes = 1;
        let b = CircuitBreaker::new(s);
        let t0 = Instant::now();
        // A call that was out when the breaker opened reports late: ignored.
        let (late, _) = b.acquire(t0);
        for _ in 0..4 {
            let _ = call(&b, t0, Outcome::Failure);
        }
        assert_eq!(b.record(late.unwrap(), Outcome::Failure, t0), None);
        assert_eq!(b.trips(), 1);
        let after = t0 + Duration::from_secs(6);
        let (probe, _) = b.acquire(after);
        {
            let _guard = PermitGuard::new(&b, probe.unwrap());
            assert!(b.acquire(after).0.is_err(), "the one probe is out");
        }
        let (probe, _) = b.acquire(after);
        assert!(probe.is_ok(), "the dropped probe freed its slot");
    }

    #[test]
    fn a_disabled_breaker_never_refuses() {
        let b = CircuitBreaker::new(BreakerSettings::DISABLED);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(call(&b, t0, Outcome::Failure), Ok(None));
        }
        assert_eq!(b.snapshot(t0).state, CircuitState::Closed);
    }
}
