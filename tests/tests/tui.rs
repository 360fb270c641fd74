//! The terminal UI in a real terminal (tmux): it shows the list, takes keys, and its writes
//! reach the store and other commands.

use std::process::Command;
use std::time::Duration;

use hellopears_tests::{hellopears_bin, list, ok, wait_until};

/// The UIs' peers find each other on the LAN: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether tmux runs here (on CI it must: the test command installs it).
fn tmux_available() -> bool {
    let has_tmux = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
    if !has_tmux {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "tmux is missing on CI");
        eprintln!("skipped on this machine: needs tmux (never skipped on CI)");
    }
    has_tmux
}

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux").args(args).output().expect("run tmux")
}

#[test]
fn the_terminal_ui_adds_and_toggles_todos() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    ok(dir.path(), &["add", "from the cli"]);
    let session = format!("hp{}", std::process::id());
    let command = format!("{} --data {}", hellopears_bin().display(), dir.path().display());
    let started = tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "20", &command]);
    assert!(started.status.success(), "{started:?}");
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-t", &session, "-p"]).stdout).into_owned();
    let shown = wait_until(Duration::from_secs(10), || screen().contains("[ ] from the cli"));
    assert!(shown, "{}", screen());
    assert!(screen().contains("alone, waiting for peers"), "{}", screen());
    tmux(&["send-keys", "-t", &session, "a"]);
    tmux(&["send-keys", "-t", &session, "-l", "typed in the ui"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    assert!(wait_until(Duration::from_secs(5), || screen().contains("[ ] typed in the ui")), "{}", screen());
    tmux(&["send-keys", "-t", &session, " "]);
    assert!(wait_until(Duration::from_secs(5), || screen().contains("[x] from the cli")), "{}", screen());
    // The CLI reaches the UI's peer while it runs.
    assert_eq!(list(dir.path()).len(), 2);
    tmux(&["send-keys", "-t", &session, "q"]);
    let gone = wait_until(Duration::from_secs(10), || !tmux(&["has-session", "-t", &session]).status.success());
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(gone, "the UI did not quit");
    let todos = list(dir.path());
    assert_eq!(todos.len(), 2);
    assert!(todos.iter().any(|t| t["text"] == "from the cli" && t["done"] == true));
}

#[test]
fn the_terminal_ui_creates_a_private_list_switches_to_it_and_invites() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A topic of its own: the UI's peer looks for peers on the LAN, and the other test's
    // peer is on `todo`.
    ok(dir.path(), &["--topic", "tui lists", "add", "public todo"]);
    let session = format!("hpl{}", std::process::id());
    let command = format!("{} --data {}", hellopears_bin().display(), dir.path().display());
    let started = tmux(&["new-session", "-d", "-s", &session, "-x", "120", "-y", "40", &command]);
    assert!(started.status.success(), "{started:?}");
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-t", &session, "-p"]).stdout).into_owned();
    assert!(wait_until(Duration::from_secs(10), || screen().contains("[ ] public todo")), "{}", screen());
    tmux(&["send-keys", "-t", &session, "l"]);
    tmux(&["send-keys", "-t", &session, "n"]);
    tmux(&["send-keys", "-t", &session, "-l", "made in the tui"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    assert!(
        wait_until(Duration::from_secs(10), || ok(dir.path(), &["lists", "--json"]).contains("made in the tui")),
        "{}",
        screen()
    );
    // The lists popup: the new list is the second; Enter opens it.
    tmux(&["send-keys", "-t", &session, "l"]);
    assert!(
        wait_until(Duration::from_secs(5), || screen().contains("made in the tui  private, owner")),
        "{}",
        screen()
    );
    tmux(&["send-keys", "-t", &session, "Down"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    assert!(
        wait_until(Duration::from_secs(10), || screen().contains("topic made in the tui (private, owner)")),
        "{}",
        screen()
    );
    tmux(&["send-keys", "-t", &session, "i"]);
    assert!(wait_until(Duration::from_secs(10), || screen().contains("#join=")), "{}", screen());
    tmux(&["send-keys", "-t", &session, "Escape"]);
    tmux(&["send-keys", "-t", &session, "q"]);
    let gone = wait_until(Duration::from_secs(10), || !tmux(&["has-session", "-t", &session]).status.success());
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(gone, "the UI did not quit");
}
