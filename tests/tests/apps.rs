//! `hellopears stage`: an app's versions in a signed log of the data dir, with the diff
//! against the previous version, like `pear stage`.

use std::path::Path;

use hellopears_tests::{ok, run};

fn write(dir: &Path, path: &str, content: &str) {
    let path = dir.join(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// The `app key <hex>` line.
fn app_key(out: &str) -> String {
    out.lines().find_map(|line| line.strip_prefix("app key ")).expect("an app key line").to_owned()
}

/// Acceptance 4: stage prints the version, the app key and the right diff for a modified
/// directory; staging unchanged content records nothing and says so.
#[test]
fn stage_records_versions_with_their_diff_and_nothing_twice() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = tempfile::tempdir().expect("tempdir");
    let dir = app.path().to_str().expect("utf-8");
    write(app.path(), "index.html", "<html>hello</html>");
    write(app.path(), "css/app.css", "body {}");
    write(app.path(), "old.js", "gone soon");

    let first = ok(data.path(), &["stage", "main", dir]);
    assert!(first.starts_with("staged main version 1\n"), "{first}");
    let key = app_key(&first);
    assert_eq!(key.len(), 64, "{first}");
    for line in ["+ css/app.css (7 bytes)", "+ index.html (18 bytes)", "+ old.js (9 bytes)"] {
        assert!(first.contains(line), "missing {line:?} in:\n{first}");
    }
    assert!(first.contains("3 added, 0 changed, 0 removed; 3 files, 34 bytes"), "{first}");

    // The same content again: nothing recorded.
    let again = ok(data.path(), &["stage", "main", dir]);
    assert!(again.starts_with("nothing to stage: main is at version 1, unchanged"), "{again}");
    assert_eq!(app_key(&again), key);

    // Modified: one file changed, one added, one removed.
    write(app.path(), "index.html", "<html>hello, v2</html>");
    write(app.path(), "img/logo.svg", "<svg/>");
    std::fs::remove_file(app.path().join("old.js")).expect("rm");
    let second = ok(data.path(), &["stage", "main", dir]);
    assert!(second.starts_with("staged main version 2\n"), "{second}");
    assert_eq!(app_key(&second), key, "the channel keeps its key");
    let changes: Vec<&str> = second.lines().filter(|l| l.starts_with(['+', '~', '-'])).collect();
    assert_eq!(changes, ["+ img/logo.svg (6 bytes)", "~ index.html (22 bytes)", "- old.js (9 bytes)"], "{second}");
    assert!(second.contains("1 added, 1 changed, 1 removed; 3 files, 35 bytes"), "{second}");

    // Another channel is another app.
    let beta = ok(data.path(), &["stage", "beta", dir]);
    assert!(beta.starts_with("staged beta version 1\n"), "{beta}");
    assert_ne!(app_key(&beta), key);
}

/// Bad arguments: a usage error for a bad channel name, a clear error for a missing
/// directory, and nothing recorded.
#[test]
fn stage_refuses_bad_channels_and_missing_directories() {
    let data = tempfile::tempdir().expect("tempdir");
    let bad = run(data.path(), &["stage", "../escape", "."]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a channel name"), "{bad:?}");
    let missing = run(data.path(), &["stage", "main", "/nonexistent/app"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such directory"), "{missing:?}");
    assert!(!data.path().join("apps").join("channels").join("main.key").exists());
}
