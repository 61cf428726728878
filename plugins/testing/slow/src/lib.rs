//! Burns CPU for `config.iterations` loop iterations (default 1,000,000),
//! then answers with one `info` violation, code `slow-done`: for deadline
//! and fuel tests that need a plugin which finishes, eventually.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_iterations")]
    iterations: u64,
}

fn default_iterations() -> u64 {
    1_000_000
}

struct Slow;

impl Guest for Slow {
    fn validate(ctx: CallContext, _output: String) -> Result<Verdict, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        let mut acc: u64 = 0;
        for i in 0..config.iterations {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        Ok(Verdict::new(vec![Violation::info(
            "",
            "slow-done",
            format!("{} iterations ({acc:x})", config.iterations),
        )]))
    }
}

reins_sdk::export_validator!(Slow);
