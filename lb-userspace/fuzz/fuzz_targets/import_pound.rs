//! Arbitrary text into `tandem import --pound` (lb-userspace/src/import/pound); see
//! shared/import.rs for what is asserted.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/import.rs"]
mod import;

fuzz_target!(|data: &[u8]| {
    // `tandem import` reads the file as UTF-8 text first.
    if let Ok(text) = std::str::from_utf8(data) {
        import::check(Some(text), None);
    }
});
