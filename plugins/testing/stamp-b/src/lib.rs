//! Stamps every verdict with "b" (see ../../stamp-common.rs).

const STAMP: &str = "b";

include!("../../stamp-common.rs");
