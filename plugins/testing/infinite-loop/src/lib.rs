//! Never returns: the host's deadline (epoch) or fuel must stop it.

use reins_sdk::CallContext;
use reins_sdk::validator::{Guest, Verdict};

struct InfiniteLoop;

impl Guest for InfiniteLoop {
    fn validate(_ctx: CallContext, _output: String) -> Result<Verdict, String> {
        let mut n: u64 = 0;
        loop {
            // black_box keeps the loop observable, so it is not optimized away.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

reins_sdk::export_validator!(InfiniteLoop);
