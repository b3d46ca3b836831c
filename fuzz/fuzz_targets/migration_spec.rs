//! Migration specs come from user folders (`tvck convert --specs DIR`): parsing and
//! compiling any text must return a value or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tvck::migrate::Spec::parse(text, "fuzz");
    }
});
