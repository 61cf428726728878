//! Claims to have fixed the document but returns text that is not JSON: the
//! host must refuse it rather than pass it on.

use reins_sdk::CallContext;
use reins_sdk::validator::{Guest, Verdict};

struct BadJson;

impl Guest for BadJson {
    fn validate(_ctx: CallContext, _output: String) -> Result<Verdict, String> {
        Ok(Verdict { violations: Vec::new(), fixed: Some("{not json".to_string()) })
    }
}

reins_sdk::export_validator!(BadJson);
