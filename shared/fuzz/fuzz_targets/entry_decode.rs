#![no_main]
//! Entry decoding, verification and ingestion must never panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hellopears_core::fuzzing::entry_decode(data);
});
