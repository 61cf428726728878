//! The audit log's records and its hash chain.
//!
//! Rows are appended, never updated: each stores the hash of the row before
//! it (`prev_hash`) and its own `hash = sha256(prev_hash || canonical
//! fields)`, so an edited row no longer matches its hash and a removed one
//! breaks the link of the row after it. [`Verifier`] walks the chain and names
//! the first row that does not hold. Removing the *newest* rows leaves a
//! shorter chain that still verifies; compare [`AuditReport::last_hash`]
//! with one kept elsewhere to catch that.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did what to what, before the store numbers and chains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened (ms since the Unix epoch), taken when the entry is
    /// made, so a row written later by a background writer keeps its time.
    pub time_ms: i64,
    /// The caller: a token's or user's name, never a credential itself.
    pub subject: String,
    pub tenant: Option<String>,
    /// `run.start`, `gate.deny`, `auth.failed`, `admin.audit`, ...
    pub action: String,
    /// What it was done to: a run id, a pipeline, an endpoint.
    pub target: String,
    /// `ok`, `error`, `allow`, `denied`, a run status, ...
    pub outcome: String,
    /// More, as a JSON object (`{}` when there is nothing).
    pub detail: Value,
    pub request_id: Option<String>,
}

impl AuditEntry {
    /// An entry by `anonymous`, now, with no detail; see [`AuditEntry::by`].
    pub fn new(
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: impl Into<String>,
    ) -> AuditEntry {
        AuditEntry {
            time_ms: crate::now_ms(),
            subject: "anonymous".to_owned(),
            tenant: None,
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            detail: Value::Object(Default::default()),
            request_id: None,
        }
    }

    /// Who the caller was.
    pub fn by(mut self, subject: impl Into<String>, tenant: Option<String>) -> AuditEntry {
        self.subject = subject.into();
        self.tenant = tenant;
        self
    }

    pub fn detail(mut self, detail: Value) -> AuditEntry {
        self.detail = detail;
        self
    }

    pub fn request(mut self, request_id: Option<String>) -> AuditEntry {
        self.request_id = request_id;
        self
    }
}

/// A stored row: the entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// 1, 2, 3, ... with no gaps; the list cursor.
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Which rows [`crate::AuditLog::audit_list`] answers, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub tenant: Option<String>,
    /// An exact action (`gate.deny`), or a prefix ending in `.` or `.*` (`gate.`).
    pub action: Option<String>,
    /// Only rows after this `seq` (the previous page's last).
    pub after: Option<i64>,
    /// At most this many rows (0: the default, 100).
    pub limit: u32,
}

impl AuditFilter {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// The limit to use: the default for 0, never over [`AuditFilter::MAX_LIMIT`].
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }

    /// The action filter as (exact, prefix).
    pub fn action_match(&self) -> (Option<&str>, Option<&str>) {
        match self.action.as_deref() {
            None | Some("") | Some("*") => (None, None),
            Some(a) if a.ends_with(".*") => (None, Some(&a[..a.len() - 1])),
            Some(a) if a.ends_with('.') => (None, Some(a)),
            Some(a) => (Some(a), None),
        }
    }
}

/// A time bound as the CLI and `GET /v1/audit` take it: milliseconds since
/// the epoch, or an age before `now_ms` (`90s`, `15m`, `2h`, `7d`).
pub fn parse_time(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let unit = match text.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok()?;
    Some(now_ms.saturating_sub(n.saturating_mul(unit)))
}

/// What [`Verifier`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Rows checked (up to and including the first bad one).
    pub rows: u64,
    /// The hash of the last row checked (the head of an intact chain).
    pub last_hash: String,
    /// The first row that does not hold, if any.
    pub broken: Option<AuditBreak>,
}

/// The first row of a chain that does not hold, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditBreak {
    pub seq: i64,
    pub problem: String,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.broken {
            None => write!(f, "audit log intact: {} rows", self.rows),
            Some(b) => write!(f, "audit log broken: row {}: {}", b.seq, b.problem),
        }
    }
}

/// The row's hash: its fields in a fixed order as a JSON array (unambiguous
/// whatever the strings hold), after `prev_hash`. `detail` is its stored
/// text, so verifying never depends on how JSON is re-serialized.
pub fn row_hash(seq: i64, entry: &AuditEntry, detail_text: &str, prev_hash: &str) -> String {
    let fields = serde_json::json!([
        seq,
        entry.time_ms,
        entry.subject,
        entry.tenant,
        entry.action,
        entry.target,
        entry.outcome,
        detail_text,
        entry.request_id,
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(fields.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The next row after `prev` (`(seq, hash)` of the newest row, `None` for an
/// empty log), with the text its `detail` is stored as.
pub fn chain(prev: Option<(i64, String)>, entry: AuditEntry) -> (AuditRow, String) {
    let (last_seq, prev_hash) = prev.unwrap_or_else(|| (0, GENESIS.to_owned()));
    let seq = last_seq + 1;
    let detail_text = entry.detail.to_string();
    let hash = row_hash(seq, &entry, &detail_text, &prev_hash);
    (
        AuditRow {
            seq,
            entry,
            prev_hash,
            hash,
        },
        detail_text,
    )
}

/// Walks rows in `seq` order, fed page by page; stops at the first bad one.
#[derive(Debug, Default)]
pub struct Verifier {
    prev: Option<(i64, String)>,
    rows: u64,
    broken: Option<AuditBreak>,
}

impl Verifier {
    /// Checks one stored row; `false` once the chain is broken.
    pub fn check(&mut self, row: &AuditRow, detail_text: &str) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.rows += 1;
        let problem = self.problem(row, detail_text);
        self.prev = Some((row.seq, row.hash.clone()));
        if let Some(problem) = problem {
            self.broken = Some(AuditBreak {
                seq: row.seq,
                problem,
            });
            return false;
        }
        true
    }

    fn problem(&self, row: &AuditRow, detail_text: &str) -> Option<String> {
        let seq = row.seq;
        if row_hash(seq, &row.entry, detail_text, &row.prev_hash) != row.hash {
            return Some(format!(
                "row {seq}: hash does not match its contents (edited)"
            ));
        }
        let (prev_seq, prev_hash) = match &self.prev {
            Some((s, h)) => (*s, h.as_str()),
            None => (0, GENESIS),
        };
        if row.prev_hash == prev_hash && seq == prev_seq + 1 {
            return None;
        }
        let what = if prev_seq == 0 {
            "the start of the log".to_owned()
        } else {
            format!("row {prev_seq}")
        };
        Some(if seq != prev_seq + 1 {
            format!("row {seq}: prev_hash does not match {what} (a row before it was removed)")
        } else {
            format!(
                "row {seq}: prev_hash does not match {what} (a row before it was edited and re-hashed)"
            )
        })
    }

    pub fn report(self) -> AuditReport {
        AuditReport {
            rows: self.rows,
            last_hash: self.prev.map_or_else(|| GENESIS.to_owned(), |(_, h)| h),
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<(AuditRow, String)> {
        let mut out: Vec<(AuditRow, String)> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|(r, _)| (r.seq, r.hash.clone()));
            out.push(chain(
                prev,
                AuditEntry::new("run.start", format!("run-{i}"), "ok"),
            ));
        }
        out
    }

    fn verify(rows: &[(AuditRow, String)]) -> AuditReport {
        let mut v = Verifier::default();
        for (r, d) in rows {
            if !v.check(r, d) {
                break;
            }
        }
        v.report()
    }

    #[test]
    fn an_edit_and_a_removal_are_named() {
        let mut log = rows(5);
        assert_eq!(verify(&log).to_string(), "audit log intact: 5 rows");
        let mut edited = log.clone();
        edited[2].0.entry.outcome = "denied".into();
        assert_eq!(
            verify(&edited).broken.map(|b| b.problem),
            Some("row 3: hash does not match its contents (edited)".into())
        );
        log.remove(2);
        assert_eq!(
            verify(&log).broken.map(|b| b.problem),
            Some("row 4: prev_hash does not match row 2 (a row before it was removed)".into())
        );
    }

    #[test]
    fn prefixes_and_exact_actions() {
        let f = |a: &str| AuditFilter {
            action: Some(a.into()),
            ..Default::default()
        };
        assert_eq!(f("gate.").action_match(), (None, Some("gate.")));
        assert_eq!(f("gate.*").action_match(), (None, Some("gate.")));
        assert_eq!(f("gate.deny").action_match(), (Some("gate.deny"), None));
        assert_eq!(parse_time("2h", 10_000_000), Some(10_000_000 - 7_200_000));
        assert_eq!(parse_time("1700000000000", 0), Some(1_700_000_000_000));
        assert_eq!(parse_time("soon", 0), None);
    }
}
