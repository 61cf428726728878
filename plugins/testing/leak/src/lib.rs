//! Counts its calls in a `static` and reports the count (code `calls`): a
//! fresh instance per call always says "1"; a reused instance says more.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};
use std::sync::atomic::{AtomicU32, Ordering};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Leak;

impl Guest for Leak {
    fn validate(_ctx: CallContext, _output: String) -> Result<Verdict, String> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Verdict::new(vec![Violation::info("", "calls", n.to_string())]))
    }
}

reins_sdk::export_validator!(Leak);
