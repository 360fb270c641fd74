#![no_main]
//! The sync state machine must never panic, whatever a peer sends.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hellopears_core::fuzzing::sync_session(data);
});
