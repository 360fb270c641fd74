#![no_main]
//! DB operation decoding and applying must never panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hellopears_core::fuzzing::db_op(data);
});
