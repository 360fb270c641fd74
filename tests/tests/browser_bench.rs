//! Browser benchmarks (`cargo xtask bench-web`; ignored in the ordinary test run): desktop
//! to tab sync latency on loopback, and the tab's first paint with 10,000 stored todos.
//! They print numbers; the targets (median latency under 30 ms, first paint under 1 s,
//! initial transfer under 600 KB gzip) are reported, not asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use hellopears_tests::browser::{self, Driver, Tab};
use hellopears_tests::{Peer, ok};
use tempfile::TempDir;

fn desktop(dir: &Path) -> Peer {
    browser::desktop_peer(dir, None, 0)
}

async fn wait_synced(tab: &Tab, timeout: Duration) -> anyhow::Result<()> {
    tab.wait_for("a synced peer", timeout, |tab| async move {
        Ok(!tab.peers().await?.is_empty() && tab.status().await?.is_some_and(|s| s.0 == "synced"))
    })
    .await
}

/// The number of todos the tab holds (its list shows them a page at a time).
const TOTAL: &str = "return Number(document.querySelector('[data-testid=todo-count]')?.dataset.total ?? -1);";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with cargo xtask bench-web"]
async fn desktop_to_tab_latency() -> anyhow::Result<()> {
    assert!(browser::available(), "the benchmark needs chromium and chromium-driver");
    let dir = TempDir::new()?;
    let a = desktop(dir.path());
    let driver = Driver::start()?;
    let profile = TempDir::new()?;
    let tab = driver.tab(profile.path()).await?;
    tab.open(a.web.as_deref().expect("web app")).await?;
    wait_synced(&tab, Duration::from_secs(20)).await?;
    // Arrival time of every new item, in ms since the Unix epoch (the desktop's clock: same machine).
    tab.client
        .execute(
            "window.__arrivals = {};
             new MutationObserver(() => {
                 const now = performance.timeOrigin + performance.now();
                 for (const li of document.querySelectorAll('[data-testid=todo-item]')) {
                     if (!(li.dataset.id in window.__arrivals)) window.__arrivals[li.dataset.id] = now;
                 }
             }).observe(document.body, { childList: true, subtree: true });",
            vec![],
        )
        .await?;
    let mut latencies = Vec::new();
    for n in 0..200 {
        let out = ok(dir.path(), &["add", &format!("latency probe {n}")]);
        let id = out.trim().to_owned();
        let created = hellopears_tests::list(dir.path())
            .iter()
            .find(|t| t["_id"].as_str().is_some_and(|x| x.starts_with(&id)))
            .and_then(|t| t["created"].as_i64())
            .expect("the probe is listed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let arrived = loop {
            let out = tab
                .client
                .execute(
                    "for (const [k, v] of Object.entries(window.__arrivals)) \
                     if (k.startsWith(arguments[0])) return v; return null;",
                    vec![serde_json::json!(id)],
                )
                .await?;
            if let Some(at) = out.as_f64() {
                break at;
            }
            anyhow::ensure!(Instant::now() < deadline, "probe {n} never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        latencies.push(arrived - created as f64);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "desktop -> tab latency over {} adds: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target: median < 30 ms)",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies[latencies.len() - 1],
    );
    tab.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with cargo xtask bench-web"]
async fn first_paint_with_10k_todos() -> anyhow::Result<()> {
    assert!(browser::available(), "the benchmark needs chromium and chromium-driver");
    let dir = TempDir::new()?;
    let a = desktop(dir.path());
    ok(dir.path(), &["seed", "10000"]);
    let driver = Driver::start()?;
    let profile = TempDir::new()?;
    let tab = driver.tab(profile.path()).await?;
    let started = Instant::now();
    tab.open(a.web.as_deref().expect("web app")).await?;
    // What the first load transferred (before the offline cache serves anything).
    let out = tab
        .client
        .execute(
            "const all = performance.getEntriesByType('resource')
                .concat(performance.getEntriesByType('navigation'));
             return all.filter(r => !r.name.endsWith('config.json'))
                .reduce((sum, r) => sum + (r.transferSize || 0), 0);",
            vec![],
        )
        .await?;
    println!("first load transferred {:.0} KB (target: < 600 KB)", out.as_f64().unwrap_or_default() / 1024.0);
    tab.wait_for("10,000 todos", Duration::from_secs(300), |tab| async move {
        let out = tab.client.execute(TOTAL, vec![]).await?;
        Ok(out.as_u64() == Some(10_000) && tab.status().await?.is_some_and(|s| s.0 == "synced"))
    })
    .await?;
    println!("catch-up of 10,000 todos into a fresh tab: {:.1} s", started.elapsed().as_secs_f64());
    for round in 0..3 {
        tab.reload().await?;
        tab.wait_for("the first paint mark", Duration::from_secs(60), |tab| async move {
            let out = tab
                .client
                .execute("return performance.getEntriesByName('hellopears-first-paint').length;", vec![])
                .await?;
            Ok(out.as_u64() == Some(1))
        })
        .await?;
        let out = tab
            .client
            .execute(
                "const at = (name) => performance.getEntriesByName(name)[0]?.startTime ?? -1;
                 return [at('hellopears-first-paint'), at('hellopears-loaded'), at('hellopears-opened'),
                         document.querySelectorAll('[data-testid=todo-item]').length,
                         Number(document.querySelector('[data-testid=todo-count]').dataset.total)];",
                vec![],
            )
            .await?;
        let ms = |i: usize| out[i].as_f64().unwrap_or_default();
        println!(
            "reload {round}: first paint at {:.0} ms after navigation start (IndexedDB loaded at {:.0} ms, \
             replica open at {:.0} ms), {} of {} todos on the first page (target: < 1000 ms)",
            ms(0),
            ms(1),
            ms(2),
            out[3],
            out[4],
        );
    }
    tab.close().await?;
    Ok(())
}
