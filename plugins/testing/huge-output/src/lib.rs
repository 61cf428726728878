//! Returns one violation whose message is `config.mib` MiB (default 300), to
//! test the host's limits on what a plugin returns.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_mib")]
    mib: usize,
}

fn default_mib() -> usize {
    300
}

struct HugeOutput;

impl Guest for HugeOutput {
    fn validate(ctx: CallContext, _output: String) -> Result<Verdict, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        let message = "x".repeat(config.mib << 20);
        Ok(Verdict::new(vec![Violation::error("", "huge", message)]))
    }
}

reins_sdk::export_validator!(HugeOutput);
