//! Tries to read a file (`config.path`, default `/etc/passwd`) and to open a
//! TCP connection, and reports both as `info` violations: `fs-ok` /
//! `fs-denied` and `net-ok` / `net-denied`. The host grants neither by
//! default, so both should be denied.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "/etc/passwd".to_string()
}

struct OpenFile;

impl Guest for OpenFile {
    fn validate(ctx: CallContext, _output: String) -> Result<Verdict, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        let fs = match std::fs::read_to_string(&config.path) {
            Ok(text) => Violation::info("", "fs-ok", text.chars().take(40).collect::<String>()),
            Err(e) => Violation::info("", "fs-denied", format!("{}: {e}", config.path)),
        };
        let net = match std::net::TcpStream::connect("127.0.0.1:1") {
            Ok(_) => Violation::info("", "net-ok", "connected to 127.0.0.1:1"),
            Err(e) => Violation::info("", "net-denied", format!("127.0.0.1:1: {e}")),
        };
        Ok(Verdict::new(vec![fs, net]))
    }
}

reins_sdk::export_validator!(OpenFile);
