//! Raw bytes straight into the pickle VM (the allow-list, every opcode, memo, BUILD,
//! budgeted materialisation): a value or an error, never a panic, a hang or an allocation
//! beyond the reader's limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(outcome) = tvck::format::pickle::parse_plain(data) {
        // What the reports print of a value must not fail either.
        let _ = format!("{:?} {:?}", outcome.value, outcome.findings);
    }
});
