//! Any bytes straight into `tvck::format::safetensors::read`: never panic, hang or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tvck::format::safetensors::read(data);
});
