//! `cargo xtask`: the one way to build, check, test and benchmark HelloPears, locally and in CI.
//!
//! - `cargo xtask test`  — installs what the tests need when missing, then runs formatting,
//!   clippy, the wasm32 builds and every test. CI runs exactly this.
//! - `cargo xtask run [ARGS]` — builds and runs the `hellopears` binary (`up` when no ARGS).
//! - `cargo xtask bench [--quick]` — every benchmark in one table, side by side with the
//!   Holepunch stack; writes `target/bench/summary.json` and `target/bench/comparisons.svg`.
//! - `cargo xtask bench-core [FILTER]` — the criterion benchmarks of the core alone.
//! - `cargo xtask web` — builds the browser app into `target/web-dist`.
//! - `cargo xtask bench-web` — browser benchmarks (sync latency, first paint).
//! - `cargo xtask bench-load` — load benchmarks (16 peers converging; `list` under 200 ms on a
//!   peer with 50 peers writing).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

mod bench;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_else(|| "help".into());
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "test" => test(),
        "run" => run(&rest),
        "bench" => bench::run(&rest),
        "bench-core" => bench(&rest),
        "wasm" => wasm(),
        "web" => web(rest.iter().any(|a| a == "--test-hooks")).map(|_| ()),
        "bench-web" => bench_web(),
        "bench-load" => bench_load(),
        "help" | "--help" | "-h" => {
            println!(
                "cargo xtask <test|run [ARGS]|bench [--quick]|bench-core [FILTER]|bench-web|bench-load|wasm|web [--test-hooks]>"
            );
            Ok(())
        }
        other => bail!("unknown task {other:?}; try `cargo xtask help`"),
    }
}

fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    // A CI run builds once from cold: incremental state would only cost time and disk.
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
}

/// Runs a step, printing its name and duration; fails loudly.
fn step(name: &str, mut command: Command) -> anyhow::Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let status = command.status().with_context(|| format!("starting {name}"))?;
    println!("<== {name}: {:.1}s", started.elapsed().as_secs_f64());
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let has_target = installed
        .as_ref()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET));
    if has_target {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET]);
    step("install the wasm32 target", add)
}

fn ensure_rust_component(component: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["component", "list", "--installed"]).output();
    let present = installed
        .as_ref()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with(component)));
    if present {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add", component]);
    step(&format!("install {component}"), add)
}

/// Installs Debian packages whose command is missing (the network namespace and NAT lab
/// tests need `ip` and `iptables`, the terminal UI test `tmux`).
fn ensure_debian_tools(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(command, _)| {
            Command::new("sh")
                .args(["-c", &format!("command -v {command}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    apt_install(&missing)
}

/// The foreign libp2p nodes of the simulated internet (js-libp2p, `tests/js`), installed from
/// the lock file when missing or older than it.
fn ensure_lab_js() -> anyhow::Result<()> {
    let dir = root().join("tests").join("js");
    let marker = dir.join("node_modules").join(".package-lock.json");
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let fresh = matches!((modified(&marker), modified(&dir.join("package-lock.json"))), (Some(installed), Some(lock)) if installed >= lock);
    if fresh {
        return Ok(());
    }
    let mut install = Command::new("npm");
    install.args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir);
    step("install the lab's js-libp2p nodes (npm ci)", install)
}

/// Installs Debian packages (after refreshing the package lists); nothing when `packages`
/// is empty.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    step("apt-get update", update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "--no-install-recommends"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive");
    step(&format!("install {}", packages.join(" ")), install)
}

fn wasm() -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let mut build = cargo();
    build.args(["build", "--target", WASM_TARGET, "-p", "hellopears-core", "-p", "hellopears-web"]);
    step("build shared and web for wasm32", build)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Where `cargo xtask web` puts the built app (`hellopears up --web` finds it there); the
/// build with test hooks (for the browser tests) goes beside it.
fn web_dist(test_hooks: bool) -> PathBuf {
    target_dir().join(if test_hooks { "web-dist-test" } else { "web-dist" })
}

/// Builds the browser app: the wasm (size-optimised profile), its JS glue from
/// wasm-bindgen's library at the locked version, the static files, and gzip copies.
/// Returns the output directory. `test_hooks` builds in the hooks the browser tests use
/// (`#debug=garbage`); the app users get never has them.
/// The built web app's sizes: each file's (name, bytes, gzip bytes), and what a first load
/// transfers (gzip, without the service worker).
#[derive(Debug)]
pub struct WebSizes {
    pub files: Vec<(String, usize, usize)>,
    pub transfer: usize,
}

fn web(test_hooks: bool) -> anyhow::Result<PathBuf> {
    web_sizes(test_hooks).map(|(dist, _)| dist)
}

fn web_sizes(test_hooks: bool) -> anyhow::Result<(PathBuf, WebSizes)> {
    ensure_wasm_target()?;
    let mut build = cargo();
    build.args(["build", "--target", WASM_TARGET, "-p", "hellopears-web", "--profile", "wasm-release"]);
    if test_hooks {
        build.args(["--features", "test-hooks"]);
    }
    step("build the web app (wasm32)", build)?;
    let wasm = target_dir().join(WASM_TARGET).join("wasm-release").join("hellopears_web.wasm");
    let dist = web_dist(test_hooks);
    let staging = dist.with_extension("new");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    println!("==> wasm-bindgen {}", wasm.display());
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .typescript(false)
        .remove_name_section(true)
        .remove_producers_section(true)
        .out_name("hellopears")
        .generate(&staging)
        .map_err(|error| anyhow::anyhow!("wasm-bindgen: {error:#}"))?;
    for entry in std::fs::read_dir(root().join("web").join("static"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), staging.join(entry.file_name()))?;
    }
    let mut transfer = 0;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&staging)? {
        let path = entry?.path();
        let bytes = std::fs::read(&path)?;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, &bytes)?;
        let gz = encoder.finish()?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.ends_with(".wasm") || name.ends_with(".js") || name.ends_with(".html") || name.ends_with(".css") {
            println!("    {name}: {} bytes, {} gzip", bytes.len(), gz.len());
            if name.ends_with(".wasm") || name == "hellopears.js" {
                files.push((name.replace('.', "_"), bytes.len(), gz.len()));
            }
            if name != "sw.js" {
                transfer += gz.len();
            }
        }
        let mut gz_path = path.into_os_string();
        gz_path.push(".gz");
        std::fs::write(gz_path, gz)?;
    }
    println!("    initial transfer (gzip): {transfer} bytes");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::rename(&staging, &dist)?;
    println!("<== web app in {}", dist.display());
    files.sort();
    Ok((dist, WebSizes { files, transfer }))
}

/// Debian packages that the native window needs to build and run (checked with pkg-config),
/// and the virtual display its test runs on.
fn ensure_window_deps() -> anyhow::Result<()> {
    let libs =
        [("webkit2gtk-4.1", "libwebkit2gtk-4.1-dev"), ("gtk+-3.0", "libgtk-3-dev"), ("libsoup-3.0", "libsoup-3.0-dev")];
    let missing: Vec<&str> = libs
        .iter()
        .filter(|(module, _)| {
            !Command::new("pkg-config").args(["--exists", module]).status().is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages = vec!["pkg-config"];
    packages.extend(missing);
    apt_install(&packages)
}

/// The wasm-bindgen version in Cargo.lock (libp2p pins it); the test runner must match.
const WASM_BINDGEN_VERSION: &str = "0.2.108";

/// Installs `wasm-bindgen-test-runner` at the locked wasm-bindgen version when missing.
fn ensure_wasm_test_runner() -> anyhow::Result<()> {
    let version = Command::new("wasm-bindgen-test-runner").arg("--version").output();
    if version.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(WASM_BINDGEN_VERSION)) {
        return Ok(());
    }
    let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    install.args(["install", "wasm-bindgen-cli", "--version", WASM_BINDGEN_VERSION, "--locked"]);
    step("install wasm-bindgen-test-runner", install)
}

fn test() -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_rust_component("rustfmt")?;
    ensure_rust_component("clippy")?;
    ensure_debian_tools(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("tmux", "tmux"),
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
        ("Xvfb", "xvfb"),
        ("node", "nodejs"),
        ("npm", "npm"),
    ])?;
    ensure_lab_js()?;
    ensure_window_deps()?;
    ensure_wasm_target()?;
    ensure_wasm_test_runner()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("cargo fmt --check", fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]);
    step("cargo clippy", clippy)?;
    let mut clippy_web = cargo();
    clippy_web.args([
        "clippy",
        "-p",
        "hellopears-web",
        "--target",
        WASM_TARGET,
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy (web, wasm32)", clippy_web)?;
    wasm()?;
    // The IndexedDB backend and the components, in headless Chromium. The test runner gives
    // Chromium no profile directory, so it makes one under TMPDIR (about 90 MB) and, as the
    // runner stops it without ending the session, leaves it there: point TMPDIR at a scratch
    // directory removed afterwards.
    let scratch = target_dir().join("tmp").join("chromium");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let mut wasm_tests = cargo();
    wasm_tests
        .args(["test", "-p", "hellopears-web", "--target", WASM_TARGET])
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", "wasm-bindgen-test-runner")
        .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", root().join("web").join("webdriver.json"))
        .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
        .env("TMPDIR", &scratch);
    let wasm_tested = step("wasm tests in headless Chromium", wasm_tests);
    let _ = std::fs::remove_dir_all(&scratch);
    wasm_tested?;
    let dist = web(true)?;
    // The end-to-end tests start the real binary: build it first (cargo test builds the
    // binaries of a package only for that package's own tests). The same packages and
    // features as the test step, so both resolve the same dependency graph and share every
    // compiled dependency (`-p hellopears` alone resolves another one: a second full build).
    let mut binary = cargo();
    binary.args(["build", "--workspace", "--all-features", "--bins"]);
    step("build hellopears", binary)?;
    let mut tests = cargo();
    tests.args(["test", "--workspace", "--all-features"]).env("HELLOPEARS_WEB_ROOT", &dist);
    if std::env::var_os("PROPTEST_CASES").is_none() {
        tests.env("PROPTEST_CASES", "1000");
    }
    step("cargo test (workspace)", tests)?;
    println!("all checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<()> {
    ensure_window_deps()?;
    let dist = web(false)?;
    let mut run = cargo();
    run.args(["run", "--release", "-p", "hellopears", "--"]);
    run.env("HELLOPEARS_WEB_ROOT", &dist);
    if args.is_empty() {
        run.args(["up", "--web"]);
    } else {
        run.args(args);
    }
    step("hellopears", run)
}

/// Browser benchmarks: desktop-to-tab latency and first paint with 10,000 todos, against
/// a release build of the desktop peer.
fn bench_web() -> anyhow::Result<()> {
    let dist = web(false)?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "hellopears", "--features", "automation"]);
    step("build hellopears (release)", build)?;
    let mut bench = cargo();
    bench
        .args([
            "test",
            "-p",
            "hellopears-tests",
            "--test",
            "browser_bench",
            "--test",
            "window_bench",
            "--",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HELLOPEARS_WEB_ROOT", &dist)
        .env("HELLOPEARS_BIN", target_dir().join("release").join("hellopears"));
    step("browser benchmarks", bench)
}

/// Load benchmarks against a release build: 16 peers converging (time, peak memory), and
/// `list` on a peer with 50 peers during their write burst, held to under 200 ms.
fn bench_load() -> anyhow::Result<()> {
    let mut build = cargo();
    // The same build as `bench-web`'s, so neither rebuilds the other's.
    build.args(["build", "--release", "-p", "hellopears", "--features", "automation"]);
    step("build hellopears (release)", build)?;
    let mut bench = cargo();
    bench
        .args(["test", "-p", "hellopears-tests", "--test", "load", "--", "--nocapture", "--test-threads=1"])
        .env("HELLOPEARS_LOAD_TARGET", "1")
        .env("HELLOPEARS_BIN", target_dir().join("release").join("hellopears"));
    step("load benchmarks", bench)
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    let mut bench = cargo();
    bench.args(["bench", "-p", "hellopears-core", "--features", "test-utils", "--bench", "core", "--"]).args(args);
    step("core benchmarks", bench)
}
