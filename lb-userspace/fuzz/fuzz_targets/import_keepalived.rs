//! Arbitrary text into `tandem import --keepalived` (lb-userspace/src/import/keepalived.rs);
//! see shared/import.rs for what is asserted.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/import.rs"]
mod import;

fuzz_target!(|data: &[u8]| {
    // `tandem import` reads the file as UTF-8 text first.
    if let Ok(text) = std::str::from_utf8(data) {
        import::check(None, Some(text));
    }
});
