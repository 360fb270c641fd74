//! The `hellopears` binary as users and scripts run it.

use std::process::Command;

use hellopears_tests::hellopears_bin;

#[test]
fn topic_command_prints_the_sha256_topic_id() {
    let out =
        Command::new(hellopears_bin()).args(["--topic", "todo", "topic", "--json"]).output().expect("run hellopears");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["id"], "602fae580f5863abfb31bf356decfdc73bf1224a62aacf6b4829ffa2dbe58390");
    assert_eq!(json["name"], "todo");
}

#[test]
fn simulation_converges_in_a_real_process() {
    let out = Command::new(hellopears_bin())
        .args(["simulate", "--peers", "5", "--ops", "100", "--drop", "0.2", "--seed", "9"])
        .output()
        .expect("run hellopears");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("converged: every replica"), "{stdout}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let out = Command::new(hellopears_bin()).args(["simulate", "--peers", "0"]).output().expect("run hellopears");
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
    let out = Command::new(hellopears_bin()).args(["no-such-command"]).output().expect("run hellopears");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(hellopears_bin()).args(["simulate", "--drop", "1.5"]).output().expect("run hellopears");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("hellopears: "));
}
