//! `cargo xtask bench [--quick]`: every benchmark of the project in one table. The core's
//! criterion benches; the desktop peer end to end (release build, loopback, sled) on the
//! same workloads as the Holepunch stack (`bench/holepunch`, Autobase + Hyperbee on
//! Corestore, Hypercore replication), each pair run side by side in one invocation; sync
//! latency, start, memory and the web app's size. Writes `target/bench/summary.json` and a
//! chart of the comparisons, `target/bench/comparisons.svg`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{cargo, root, step, target_dir};

/// One measured figure.
#[derive(Debug)]
struct Metric {
    name: String,
    value: f64,
    unit: &'static str,
    higher_is_better: bool,
    /// The target, if the project set one.
    target: Option<f64>,
}

#[derive(Debug, Default)]
struct Metrics(Vec<Metric>);

impl Metrics {
    fn add(&mut self, name: &str, value: f64, unit: &'static str, higher_is_better: bool, target: Option<f64>) {
        self.0.push(Metric { name: name.to_owned(), value, unit, higher_is_better, target });
    }

    fn higher(&mut self, name: &str, value: f64, unit: &'static str, target: Option<f64>) {
        self.add(name, value, unit, true, target);
    }

    fn lower(&mut self, name: &str, value: f64, unit: &'static str, target: Option<f64>) {
        self.add(name, value, unit, false, target);
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    // Built apart, so the peer is the same build as `bench-web`'s and `bench-load`'s.
    let mut build = cargo();
    build.args(["build", "--release", "-p", "hellopears", "--features", "automation"]);
    step("build the peer (release)", build)?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "hellopears-tests", "--bin", "bench-e2e"]);
    step("build the end-to-end benchmarks (release)", build)?;
    let holepunch = root().join("bench").join("holepunch");
    if !holepunch.join("node_modules").is_dir() {
        let mut install = Command::new("npm");
        install.args(["ci", "--no-audit", "--no-fund"]).current_dir(&holepunch);
        step("install the Holepunch stack (npm ci)", install)?;
    }
    let mut metrics = Metrics::default();

    let mut core = cargo();
    core.args(["bench", "-p", "hellopears-core", "--features", "test-utils", "--bench", "core", "--"]);
    if quick {
        // The per-entry 100k verify benches take 4 s a run: the quick set keeps only the
        // amortized one (catch-up end to end measures verification anyway).
        core.args(["--quick", "^(linearize_apply|reorg|private_list|db_query|verify/decode_check_runs)"]);
    }
    step("core benchmarks (criterion)", core)?;
    criterion(&mut metrics)?;

    // The same workloads on both sides, alternating which goes first.
    let pairs = [
        ("batched", "ops_per_s", "batched_writes_vs_autobase", 20.0, Some(200_000.0)),
        ("awaited", "ops_per_s", "awaited_writes_vs_autobase", 15.0, Some(5_000.0)),
        ("two-writers", "ops_per_s", "two_live_writers_vs_autobase", 50.0, None),
        ("catch-up", "entries_per_s", "catch_up_vs_hypercore", 25.0, Some(250_000.0)),
    ];
    for (round, (workload, field, ratio, ratio_target, target)) in pairs.into_iter().enumerate() {
        let (ours, theirs) = if round % 2 == 0 {
            let ours = e2e(workload, quick)?;
            (ours, holepunch_run(&holepunch, workload, quick)?)
        } else {
            let theirs = holepunch_run(&holepunch, workload, quick)?;
            (e2e(workload, quick)?, theirs)
        };
        let name = workload.replace('-', "_");
        let (a, b) = (number(&ours, field)?, number(&theirs, field)?);
        metrics.higher(&format!("hellopears_{name}_{field}"), a, "1/s", target);
        metrics.higher(&format!("holepunch_{name}_{field}"), b, "1/s", None);
        metrics.higher(ratio, a / b, "x", Some(ratio_target));
        if workload == "two-writers" {
            metrics.lower("hellopears_two_writers_tail_ms", number(&ours, "tail_ms")?, "ms", None);
            metrics.lower("holepunch_two_writers_tail_ms", number(&theirs, "tail_ms")?, "ms", None);
        }
        if workload == "batched" {
            metrics.lower("rss_peak_writing_batches_mib", number(&ours, "rss_peak_mib")?, "MiB", Some(150.0));
        }
        if workload == "catch-up" {
            let n = number(&ours, "entries")?;
            let k = (n / 1000.0).round();
            metrics.lower(&format!("rss_after_catch_up_{k}k_mib"), number(&ours, "rss_after_mib")?, "MiB", Some(100.0));
            metrics.lower("rss_peak_catching_up_mib", number(&ours, "rss_peak_mib")?, "MiB", Some(150.0));
            metrics.lower(
                &format!("rss_after_restart_{k}k_mib"),
                number(&ours, "restart_rss_mib")?,
                "MiB",
                Some(100.0),
            );
            metrics.lower(&format!("restart_to_ready_{k}k_ms"), number(&ours, "restart_ms")?, "ms", Some(250.0));
            metrics.lower("rss_peak_writer_of_catch_up_mib", number(&ours, "writer_rss_peak_mib")?, "MiB", Some(150.0));
        }
    }
    for (workload, name) in [("latency-tcp", "tcp"), ("latency-quic", "quic")] {
        let result = e2e(workload, quick)?;
        metrics.lower(&format!("sync_latency_{name}_median_ms"), number(&result, "median_ms")?, "ms", Some(2.0));
        metrics.lower(&format!("sync_latency_{name}_p99_ms"), number(&result, "p99_ms")?, "ms", Some(10.0));
    }
    let start = e2e("start", quick)?;
    metrics.lower("cold_start_empty_ms", number(&start, "start_ms")?, "ms", None);
    metrics.lower("rss_idle_mib", number(&start, "rss_idle_mib")?, "MiB", Some(20.0));

    let (_, sizes) = crate::web_sizes(false)?;
    for (name, raw, gzip) in &sizes.files {
        metrics.lower(&format!("web_{name}_bytes"), *raw as f64, "B", None);
        metrics.lower(&format!("web_{name}_gzip_bytes"), *gzip as f64, "B", None);
    }
    metrics.lower("web_initial_transfer_gzip_bytes", sizes.transfer as f64, "B", Some(500.0 * 1024.0));
    if !quick {
        browser(&mut metrics)?;
    }
    report(&metrics, quick)
}

fn number(value: &Value, field: &str) -> anyhow::Result<f64> {
    value[field].as_f64().with_context(|| format!("no {field} in {value}"))
}

fn e2e(workload: &str, quick: bool) -> anyhow::Result<Value> {
    let release = target_dir().join("release");
    let mut command = Command::new(release.join("bench-e2e"));
    command.arg(workload).env("HELLOPEARS_BIN", release.join("hellopears"));
    if quick {
        command.arg("--quick");
    }
    json_of(&format!("HelloPears {workload}"), command)
}

fn holepunch_run(dir: &Path, workload: &str, quick: bool) -> anyhow::Result<Value> {
    let mut command = Command::new("node");
    command.arg("bench.mjs").arg(workload).current_dir(dir);
    if quick {
        command.arg("--quick");
    }
    json_of(&format!("Holepunch {workload}"), command)
}

/// Runs a benchmark that prints one JSON object on its last line.
fn json_of(name: &str, mut command: Command) -> anyhow::Result<Value> {
    println!("==> {name}");
    let out = command.output().with_context(|| format!("starting {name}"))?;
    if !out.status.success() {
        bail!("{name} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    println!("<== {name}: {line}");
    serde_json::from_str(line).with_context(|| format!("{name} printed {text}"))
}

/// The criterion results: mean time per run, and throughput where the bench set one.
fn criterion(metrics: &mut Metrics) -> anyhow::Result<()> {
    let dir = target_dir().join("criterion");
    let mut found = Vec::new();
    for group in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let group = group?.path();
        let Ok(benches) = std::fs::read_dir(&group) else { continue };
        for bench in benches {
            let bench = bench?.path().join("new");
            let (Ok(estimates), Ok(about)) = (
                std::fs::read_to_string(bench.join("estimates.json")),
                std::fs::read_to_string(bench.join("benchmark.json")),
            ) else {
                continue;
            };
            let estimates: Value = serde_json::from_str(&estimates)?;
            let about: Value = serde_json::from_str(&about)?;
            let mean_ns = estimates["mean"]["point_estimate"].as_f64().unwrap_or_default();
            let id = about["full_id"].as_str().unwrap_or_default().replace('/', "_");
            found.push((id, mean_ns, about["throughput"]["Elements"].as_f64()));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, mean_ns, elements) in found {
        metrics.lower(&format!("core_{id}_ms"), mean_ns / 1e6, "ms", None);
        if let Some(elements) = elements {
            metrics.higher(&format!("core_{id}_per_s"), elements / (mean_ns / 1e9), "1/s", None);
        }
    }
    Ok(())
}

/// The browser benchmarks (desktop-to-tab latency, first paint with 10,000 todos).
fn browser(metrics: &mut Metrics) -> anyhow::Result<()> {
    let dist = crate::web_dist(false);
    let out = cargo()
        .args(["test", "-p", "hellopears-tests", "--test", "browser_bench", "--", "--ignored", "--nocapture"])
        .args(["--test-threads=1"])
        .env("HELLOPEARS_WEB_ROOT", &dist)
        .env("HELLOPEARS_BIN", target_dir().join("release").join("hellopears"))
        .output()
        .context("starting the browser benchmarks")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the browser benchmarks failed: {text}");
    }
    if !text.contains("desktop -> tab latency") {
        bail!("the browser benchmarks printed no desktop -> tab latency: {text}");
    }
    let after = |line: &str, marker: &str| -> Option<f64> {
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.trim_start().split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
    };
    for line in text.lines() {
        // The test harness may print a test's name on the same line first.
        if line.contains("desktop -> tab latency")
            && let Some(median) = after(line, "median")
        {
            metrics.lower("desktop_to_tab_median_ms", median, "ms", Some(10.0));
        }
        if line.contains("reload 1:")
            && let Some(paint) = after(line, "first paint at")
        {
            metrics.lower("tab_first_paint_10k_ms", paint, "ms", Some(1000.0));
        }
    }
    Ok(())
}

/// Prints the table, and writes the JSON and the chart.
fn report(metrics: &Metrics, quick: bool) -> anyhow::Result<()> {
    let machine = machine();
    println!();
    println!("HelloPears benchmarks ({}) on {machine}", if quick { "quick" } else { "full" });
    println!("{:<72} {:>14} {:<5} {:>12}  met", "metric", "value", "unit", "target");
    for m in &metrics.0 {
        let (target, met) = match m.target {
            None => (String::new(), ""),
            Some(t) => {
                let met = if m.higher_is_better { m.value >= t } else { m.value <= t };
                (format!("{} {t}", if m.higher_is_better { ">=" } else { "<=" }), if met { "yes" } else { "NO" })
            }
        };
        println!("{:<72} {:>14.2} {:<5} {:>12}  {met}", m.name, m.value, m.unit, target);
    }
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let summary = json!({
        "machine": machine,
        "quick": quick,
        "metrics": metrics.0.iter().map(|m| json!({
            "name": m.name, "value": m.value, "unit": m.unit,
            "better": if m.higher_is_better { "higher" } else { "lower" },
            "target": m.target,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(out.join("comparisons.svg"), chart(metrics))?;
    println!("\nwrote {} and {}", out.join("summary.json").display(), out.join("comparisons.svg").display());
    Ok(())
}

/// The machine, in one line: CPU model and count, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} x {cores}, {memory:.0} GiB, Linux {}", model.unwrap_or("unknown CPU"), kernel.trim())
}

/// A bar chart of the side-by-side ratios (HelloPears over the Holepunch stack, log scale),
/// with each target marked.
fn chart(metrics: &Metrics) -> String {
    let ratios: Vec<&Metric> = metrics.0.iter().filter(|m| m.unit == "x").collect();
    let (width, row, left) = (760.0, 46.0, 250.0);
    let height = 60.0 + row * ratios.len() as f64;
    let max = ratios.iter().flat_map(|m| [m.value, m.target.unwrap_or(1.0)]).fold(10.0_f64, f64::max);
    let scale = |x: f64| left + (width - left - 60.0) * (x.max(1.0).log10() / max.log10());
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" \
         font-size=\"13\">\n<text x=\"10\" y=\"22\" font-size=\"15\">HelloPears vs the Holepunch stack (x, log \
         scale; | marks the target)</text>\n"
    );
    for (i, m) in ratios.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let colour = if m.target.is_none_or(|t| m.value >= t) { "#2a9d8f" } else { "#e76f51" };
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\">{}</text>", y + 20.0, m.name);
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"26\" fill=\"{colour}\"/>",
            y + 4.0,
            scale(m.value) - left
        );
        let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{}\">{:.1}x</text>", scale(m.value) + 6.0, y + 22.0, m.value);
        if let Some(t) = m.target {
            let x = scale(t);
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"black\" stroke-width=\"2\"/>",
                y,
                y + 34.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
