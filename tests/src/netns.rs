//! Network namespaces for tests (root, iproute2): created by the test, removed on drop,
//! even when the test fails.

use std::process::Command;

/// Runs `ip ARGS`, failing loudly.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether this process may create namespaces. On CI (`CI=true`) a missing prerequisite is
/// a failure, never a skip.
pub fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(root && has_ip, "network namespace tests need root and iproute2 on CI");
    }
    root && has_ip
}

/// Two namespaces joined by a veth pair, `10.77.<n>.1/24` and `10.77.<n>.2/24`.
#[derive(Debug)]
pub struct VethPair {
    /// The namespaces' names.
    pub names: [String; 2],
    /// Their addresses.
    pub addrs: [String; 2],
}

impl VethPair {
    /// Creates the pair; `n` keeps concurrent tests apart.
    pub fn new(n: u8) -> Self {
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let names = [format!("hpa{tag}"), format!("hpb{tag}")];
        let addrs = [format!("10.77.{n}.1"), format!("10.77.{n}.2")];
        let pair = Self { names, addrs };
        for name in &pair.names {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        ip(&[
            "link",
            "add",
            &va,
            "netns",
            &pair.names[0],
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            &pair.names[1],
        ]);
        for (name, (dev, addr)) in pair.names.iter().zip([(&va, &pair.addrs[0]), (&vb, &pair.addrs[1])]) {
            ip(&["-n", name, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", name, "link", "set", dev, "multicast", "on"]);
            ip(&["-n", name, "link", "set", dev, "up"]);
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
