//! What several test binaries share but the lab library (which xtask links, without Tandem's
//! library) must not carry. Each test binary uses part of it, so the rest is unused there.
#![allow(dead_code)]

pub mod packets;
