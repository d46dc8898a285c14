//! The built-in dashboard in a real browser: headless Chromium (Debian's
//! `chromium`, installed by `scripts/setup`) loads `/dashboard` from a
//! member of a real three-process cluster under a light write load, and
//! the test checks what the page rendered (every node, the shard and its
//! leader, live rates) and that the browser logged nothing to its console.
//!
//! `RINGKV_UPDATE_SCREENSHOT=1 cargo test -p ringkv-cli --test dashboard`
//! also saves the screenshot as `docs/dashboard.png` (the README shows it).
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "a test")]

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use ringkv_api::etcdserverpb::PutRequest;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use support::{ProcessCluster, wait_until};

/// Bounds every wait on the cluster; reaching it fails as a hang.
const WAIT: Duration = Duration::from_secs(60);

/// Virtual time the page runs for before Chromium dumps it: a few polls
/// (one a second). Chromium stops virtual time while a fetch is pending,
/// so slow answers do not eat into it.
const PAGE_VIRTUAL_MS: u64 = 4000;

/// Longest one Chromium run may take in real time before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// The screenshot's size: the README's picture.
const WINDOW_SIZE: &str = "1280,900";

/// Pause between two writes of the background load (about 50 a second).
const LOAD_PAUSE: Duration = Duration::from_millis(20);

/// Most writes the background load makes, whatever happens.
const LOAD_WRITES_MAX: u32 = 5_000;

/// Seconds with writes the leader samples before the page loads, so its
/// charts have lines to draw.
const CHARTED_SECONDS_MIN: usize = 3;

/// The environment variable that makes the test save its screenshot.
const UPDATE_SCREENSHOT: &str = "RINGKV_UPDATE_SCREENSHOT";

/// Chromium, or a failure saying how to get it: a test that needs a
/// browser must not pass without one.
fn chromium() -> PathBuf {
    let candidates = ["chromium", "chromium-browser"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in candidates {
            let exe = dir.join(name);
            if exe.is_file() {
                return exe;
            }
        }
    }
    panic!(
        "chromium is not installed: run scripts/setup (it installs Debian's chromium package), \
         then run this test again"
    );
}

/// `GET path` on `addr`, the body as a string (our server answers
/// `Connection: close` requests with a plain body).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header block")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked answer");
    Ok(body.to_owned())
}

/// Writes to `addr` every [`LOAD_PAUSE`] until `stop`, so the page has
/// throughput and latency to chart.
fn spawn_load(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let Ok(mut kv) = KvClient::connect(format!("http://{addr}")).await else { return 0 };
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && written < LOAD_WRITES_MAX {
                let key = format!("dashboard/{}", written % 100).into_bytes();
                let put = PutRequest { key, value: b"v".to_vec(), ..Default::default() };
                if kv.put(put).await.is_ok() {
                    written += 1;
                }
                tokio::time::sleep(LOAD_PAUSE).await;
            }
            written
        })
    })
}

/// What one headless Chromium run produced.
struct Page {
    dom: String,
    console: Vec<String>,
    screenshot: Vec<u8>,
}

/// Loads `url` in headless Chromium for [`PAGE_VIRTUAL_MS`] of virtual
/// time; returns the DOM, the console lines and a screenshot.
fn load_page(url: &str, dir: &Path) -> anyhow::Result<Page> {
    let screenshot = dir.join("dashboard.png");
    let stderr_path = dir.join("chromium.log");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            // Tests run as root in CI, where Chromium refuses its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--virtual-time-budget={PAGE_VIRTUAL_MS}"))
        .arg(format!("--window-size={WINDOW_SIZE}"))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("starting chromium")?;
    let mut stdout = child.stdout.take().context("chromium's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("chromium did not finish within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = reader.join().unwrap();
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    ensure!(status.success(), "chromium failed ({status}):\n{log}");
    // Chromium logs every console message as `…:INFO:CONSOLE…] "text",
    // source: url (line)`; the page itself logs nothing.
    let console = log.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    let screenshot = std::fs::read(&screenshot)
        .with_context(|| format!("no screenshot; chromium said:\n{log}"))?;
    Ok(Page { dom, console, screenshot })
}

/// The value of `data-<name>` on the page's `<body>`.
fn body_data<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find("<body")?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!("data-{name}=\"");
    let from = tag.find(&key)? + key.len();
    Some(&tag[from..from + tag[from..].find('"')?])
}

#[test]
fn the_dashboard_renders_a_three_node_cluster_in_chromium() -> anyhow::Result<()> {
    let browser = chromium();
    eprintln!("browser: {}", browser.display());
    let cluster = ProcessCluster::start(3)?;
    let leader = cluster.wait_leader(WAIT)?;
    let member = &cluster.members[(leader + 1) % 3];
    let reachable = wait_until(WAIT, || {
        http_get(member.client_addr(), "/dashboard/api/cluster").is_ok_and(|body| {
            body.matches("\"reachable\":true").count() == 3 && body.contains("\"role\":\"leader\"")
        })
    });
    ensure!(reachable, "the cluster view never showed three reachable members");

    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(cluster.members[leader].client_addr(), Arc::clone(&stop));
    // Members sample their counters once a second for the charts: let a
    // few samples with writes in them accumulate.
    let charted = wait_until(WAIT, || {
        http_get(cluster.members[leader].client_addr(), "/dashboard/api/node")
            .ok()
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|view| {
                let history = view["history"].as_array()?.clone();
                let calls = |s: &serde_json::Value| s["grpc_unary_calls"].as_u64();
                let with_writes =
                    history.windows(2).filter(|w| calls(&w[1]) > calls(&w[0])).count();
                Some(with_writes >= CHARTED_SECONDS_MIN)
            })
            .unwrap_or(false)
    });
    ensure!(charted, "the leader never sampled {CHARTED_SECONDS_MIN} seconds of writes");
    let dir = tempfile::tempdir()?;
    let page = load_page(&format!("{}/dashboard", member.client_url()), dir.path());
    stop.store(true, Ordering::Relaxed);
    let written = load.join().unwrap();
    let page = page?;
    eprintln!("background writes: {written}");

    let data = |name| body_data(&page.dom, name).unwrap_or("(absent)");
    let summary =
        ["ready", "nodes", "reachable", "healthy", "shards", "leader", "samples", "errors"]
            .map(|n| format!("{n}={}", data(n)))
            .join(" ");
    eprintln!("page: {summary}");
    let errors = page.dom.find("<ul id=\"errors\"").map(|i| &page.dom[i..]).unwrap_or_default();
    ensure!(data("errors") == "0", "the page recorded script errors: {errors}");
    ensure!(page.console.is_empty(), "console messages:\n{}", page.console.join("\n"));
    ensure!(data("ready") == "true", "the page never drew a view: {summary}");
    ensure!(
        data("nodes") == "3" && data("reachable") == "3" && data("healthy") == "3",
        "{summary}"
    );
    ensure!(data("shards") == "1", "{summary}");
    ensure!(data("leader") == cluster.members[leader].name, "{summary}");
    let charted = data("samples").parse::<usize>().unwrap_or(0);
    ensure!(charted >= CHARTED_SECONDS_MIN, "too few seconds charted: {summary}");
    // Every node is drawn on the ring and listed, healthy; the shard too.
    ensure!(page.dom.matches("class=\"node node-ok\"").count() == 3, "ring nodes");
    ensure!(page.dom.matches("class=\"node-row node-ok\"").count() == 3, "node rows");
    ensure!(page.dom.contains("data-shard=\"1\""), "shard row");
    for m in &cluster.members {
        ensure!(page.dom.contains(&format!(">{}<", m.name)), "{} is not shown", m.name);
    }

    ensure!(page.screenshot.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    if std::env::var_os(UPDATE_SCREENSHOT).is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::write(&docs, &page.screenshot)?;
        eprintln!("saved {}", docs.display());
    }
    Ok(())
}
