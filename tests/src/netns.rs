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

/// Whether NAT lab tests can run (root, iproute2, iptables). On CI a missing one fails.
pub fn nat_lab_available() -> bool {
    let has_iptables = Command::new("iptables").arg("-V").output().is_ok_and(|o| o.status.success());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(has_iptables, "the NAT lab needs iptables on CI");
    }
    available() && has_iptables
}

/// The reference NAT topology: a public segment (10.99.0.0/24, public host at .1, router
/// WANs at .11 and .12) and two home routers doing MASQUERADE, each with one host behind it
/// (192.168.1.2 and 192.168.2.2). The routers drop unsolicited packets from the WAN, as home
/// routers do. Namespaces `<prefix>pub`, `<prefix>nat1`, `<prefix>nat2`, `<prefix>a`,
/// `<prefix>b`; removed on drop.
#[derive(Debug)]
pub struct NatLab {
    prefix: String,
    /// Hosts added after the lab was built (removed on drop too).
    extra: std::sync::Mutex<Vec<String>>,
}

impl NatLab {
    /// Builds the lab; `symmetric` gives each router MASQUERADE `--random` (a new port per
    /// destination), where hole punching cannot work.
    pub fn new(tag: u8, symmetric: bool) -> Self {
        let prefix = format!("nl{}{tag}", std::process::id() % 10_000);
        let lab = Self { prefix, extra: std::sync::Mutex::new(Vec::new()) };
        for ns in ["pub", "nat1", "nat2", "a", "b"] {
            ip(&["netns", "add", &lab.ns(ns)]);
            ip(&["-n", &lab.ns(ns), "link", "set", "lo", "up"]);
        }
        let public = lab.ns("pub");
        ip(&["-n", &public, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &public, "addr", "add", "10.99.0.1/24", "dev", "br0"]);
        ip(&["-n", &public, "link", "set", "br0", "up"]);
        for i in 1..=2 {
            let router = lab.ns(&format!("nat{i}"));
            let host = lab.ns(if i == 1 { "a" } else { "b" });
            let port = format!("port{i}");
            ip(&["link", "add", "wan", "netns", &router, "type", "veth", "peer", "name", &port, "netns", &public]);
            ip(&["-n", &public, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &router, "addr", "add", &format!("10.99.0.1{i}/24"), "dev", "wan"]);
            ip(&["-n", &router, "link", "set", "wan", "up"]);
            // The home LAN is a bridge, so more hosts can join it (`add_home_host`).
            ip(&["-n", &router, "link", "add", "lan", "type", "bridge"]);
            ip(&["-n", &router, "addr", "add", &format!("192.168.{i}.1/24"), "dev", "lan"]);
            ip(&["-n", &router, "link", "set", "lan", "up"]);
            lab.plug_host(&router, &host, "h2", &format!("192.168.{i}.2"), &format!("192.168.{i}.1"));
            let run = |args: &[&str]| {
                let out =
                    Command::new("ip").args(["netns", "exec", &router]).args(args).output().expect("run in the router");
                assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let mut masquerade = vec!["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"];
            if symmetric {
                masquerade.push("--random");
            }
            run(&masquerade);
            run(&["iptables", "-P", "FORWARD", "DROP"]);
            run(&["iptables", "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"]);
            // Hosts of one home reach each other (bridged frames meet iptables where
            // br_netfilter is loaded).
            run(&["iptables", "-A", "FORWARD", "-i", "lan", "-o", "lan", "-j", "ACCEPT"]);
            run(&[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-o",
                "lan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            run(&[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            run(&["iptables", "-A", "INPUT", "-i", "wan", "-p", "icmp", "-j", "ACCEPT"]);
            run(&["iptables", "-A", "INPUT", "-i", "wan", "-j", "DROP"]);
        }
        lab
    }

    /// The full name of one of the lab's namespaces (`pub`, `nat1`, `nat2`, `a`, `b`, and
    /// hosts added later).
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Adds a host `name` to home network `home` (1 or 2) at `192.168.<home>.<last>`.
    pub fn add_home_host(&self, home: u8, name: &str, last: u8) -> String {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        if let Ok(mut extra) = self.extra.lock() {
            extra.push(ns.clone());
        }
        let router = self.ns(&format!("nat{home}"));
        self.plug_host(
            &router,
            &ns,
            &format!("h{last}"),
            &format!("192.168.{home}.{last}"),
            &format!("192.168.{home}.1"),
        );
        ns
    }

    /// Adds a host `name` to the public segment, with addresses `10.99.0.<last>` for each
    /// of `lasts` (several servers may share the host).
    pub fn add_public_host(&self, name: &str, lasts: &[u8]) -> String {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        if let Ok(mut extra) = self.extra.lock() {
            extra.push(ns.clone());
        }
        let port = format!("pub{name}");
        ip(&["link", "add", &port, "netns", &self.ns("pub"), "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&["-n", &self.ns("pub"), "link", "set", &port, "master", "br0", "up"]);
        for last in lasts {
            ip(&["-n", &ns, "addr", "add", &format!("10.99.0.{last}/24"), "dev", "eth0"]);
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    /// Connects `host` to the LAN bridge of `router` through a veth (`port` on the router's
    /// side, `eth0` on the host's), with `addr` and a default route via `gateway`.
    fn plug_host(&self, router: &str, host: &str, port: &str, addr: &str, gateway: &str) {
        ip(&["link", "add", port, "netns", router, "type", "veth", "peer", "name", "eth0", "netns", host]);
        ip(&["-n", router, "link", "set", port, "master", "lan", "up"]);
        ip(&["-n", host, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", host, "link", "set", "eth0", "up"]);
        ip(&["-n", host, "route", "add", "default", "via", gateway]);
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.extra.lock().map(|extra| extra.clone()).unwrap_or_default() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        for ns in ["a", "b", "nat1", "nat2", "pub"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(ns)]).status();
        }
    }
}

/// A veth link from this (root) namespace into `ns`, for controlling a program there (a
/// chromedriver) without routing anything else: `10.252.<n>.1/30` here, `.2` there.
#[derive(Debug)]
pub struct ControlLink {
    dev: String,
    /// The address on the namespace's side.
    pub ns_ip: String,
}

impl ControlLink {
    /// Creates the link; `n` keeps concurrent tests apart.
    pub fn new(ns: &str, n: u8) -> Self {
        let dev = format!("ctl{}{n}", std::process::id() % 10_000);
        let (here, there) = (format!("10.252.{n}.1"), format!("10.252.{n}.2"));
        ip(&["link", "add", &dev, "type", "veth", "peer", "name", "ctl0", "netns", ns]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", &dev]);
        ip(&["link", "set", &dev, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{there}/30"), "dev", "ctl0"]);
        ip(&["-n", ns, "link", "set", "ctl0", "up"]);
        Self { dev, ns_ip: there }
    }
}

impl Drop for ControlLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.dev]).output();
    }
}
