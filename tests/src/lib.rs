//! Helpers for end-to-end tests that run real `hellopears` processes.

use std::path::PathBuf;

/// The `hellopears` binary built alongside these tests (`target/<profile>/hellopears`),
/// or the one named by `HELLOPEARS_BIN`.
pub fn hellopears_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HELLOPEARS_BIN") {
        return PathBuf::from(path);
    }
    let mut dir = std::env::current_exe().unwrap_or_default();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("hellopears{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the workspace tests (cargo xtask test) or cargo build -p hellopears",
        bin.display()
    );
    bin
}
