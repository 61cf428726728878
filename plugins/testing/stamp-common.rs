// Shared by stamp-a and stamp-b: `include!`d after `const STAMP: &str`.
// One `info` violation, code `stamp`, message STAMP, so a test can tell
// which version of a hot-swapped plugin answered.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};

struct Stamp;

impl Guest for Stamp {
    fn validate(_ctx: CallContext, _output: String) -> Result<Verdict, String> {
        Ok(Verdict::new(vec![Violation::info("", "stamp", STAMP)]))
    }
}

reins_sdk::export_validator!(Stamp);
