//! Any bytes straight into `tvck::format::torch::read_zip`: never panic, hang or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tvck::format::torch::read_zip(data);
});
