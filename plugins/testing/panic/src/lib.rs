//! Panics on every call (panic = "abort": the host sees a trap).

use reins_sdk::CallContext;
use reins_sdk::validator::{Guest, Verdict};

struct Panic;

impl Guest for Panic {
    fn validate(_ctx: CallContext, output: String) -> Result<Verdict, String> {
        panic!("panic fixture: refusing {} bytes of output", output.len());
    }
}

reins_sdk::export_validator!(Panic);
