//! Allocates 1 MiB chunks and keeps them live until the host's memory limit
//! makes an allocation fail (a Rust guest then aborts: a trap).

use reins_sdk::CallContext;
use reins_sdk::validator::{Guest, Verdict};

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn validate(_ctx: CallContext, _output: String) -> Result<Verdict, String> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Written (not just reserved) and kept reachable via black_box.
            chunks.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
            std::hint::black_box(&chunks);
        }
    }
}

reins_sdk::export_validator!(MemoryBomb);
