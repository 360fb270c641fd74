#![no_main]
//! Control-socket request parsing must never panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hellopears_core::fuzzing::control_request(data);
});
