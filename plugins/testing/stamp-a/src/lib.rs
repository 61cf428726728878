//! Stamps every verdict with "a" (see ../../stamp-common.rs).

const STAMP: &str = "a";

include!("../../stamp-common.rs");
