//! The web dashboard in a real browser: Debian's Chromium, headless, driven
//! over WebDriver by chromedriver, against a real `rackboot serve`.
//!
//! - A lab machine (QEMU behind an IPMI BMC) appears in the fleet table on
//!   its first PXE request; its page is opened; it is powered off, set to PXE
//!   and powered on with the page's buttons, and its boot timeline chart grows
//!   live while it boots Linux (no reload).
//! - A deploy started from a machine's page shows its progress (bytes, rate)
//!   live; the machine is the simulated agent of tests/sim (its disk a file),
//!   which keeps this part short.
//! - A viewer token sees no action buttons.
//!
//! Needs root, the lab's packages and chromium + chromium-driver
//! (scripts/install-deps). `RACKBOOT_SCREENSHOTS=DIR` keeps the screenshots
//! (the README's are made so).

mod browser;
mod common;
mod sim;

use std::time::{Duration, Instant};

use browser::{Browser, Relay, screenshot_path, sign_in};
use common::{BOOT_TIMEOUT, Rack, VMS};
use rackboot_lab::{BmcKind, MARKER, MachineSpec};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(20);

fn admin_token(state_dir: &std::path::Path) -> String {
    std::fs::read_to_string(state_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

/// The number of events the machine page's chart was drawn from.
const CHART_EVENTS: &str = "const c = document.getElementById('timeline-chart'); \
    return c ? Number(c.dataset.events) : 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_a_lab_machine_from_its_first_pxe_request_to_linux() {
    if !rackboot_testenv::privileged_with(
        "root: network namespaces, QEMU machines",
        &["chromium", "chromedriver"],
    ) {
        return;
    }
    let _vms = VMS.lock().await;
    let started = Instant::now();
    let rack = Rack::start_with_bmc(
        vec![MachineSpec::bios()],
        Some(BmcKind::Ipmi),
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    let relay = Relay::into_netns(rack.lab.netns().name(), "10.77.0.1:8080".parse().unwrap()).await;
    let b = Browser::start(1280, 900).await;
    sign_in(&b, &relay.url(), &admin_token(&rack.state_dir)).await;
    b.wait(
        "the empty fleet",
        SHORT,
        "return document.querySelector('main .empty') !== null",
    )
    .await;

    // Its power button is pressed (by the lab, not rackboot): the machine
    // PXE-boots and rackboot discovers it; the table shows it without a reload.
    let bmc = rack.lab.bmc(0).expect("a BMC lab machine");
    bmc.power_on().unwrap();
    let name = b
        .wait(
            "the discovered machine in the fleet table",
            Duration::from_secs(120),
            "const r = document.querySelector('#machine-table tr[data-machine]'); \
             return r ? r.dataset.machine : null",
        )
        .await;
    let name = name.as_str().unwrap().to_string();
    assert!(name.starts_with("m-"), "{name}");
    println!("discovered {name} after {:?}", started.elapsed());

    // An operator gives it its BMC and a profile (by the CLI: enrolment is an admin's).
    rack.cli(&["machine", "set-bmc", &name, bmc.url()]);
    rack.cli(&[
        "machine",
        "set-boot",
        &name,
        "profile",
        "--profile",
        "linux",
    ]);

    b.click(&format!("#machine-table a[href='#/machines/{name}']"))
        .await;
    b.wait("the machine page's chart", SHORT, CHART_EVENTS)
        .await;
    // Marks the page: a reload would lose it.
    b.js("window.__notReloaded = true", vec![]).await;
    let first_boot = b.js(CHART_EVENTS, vec![]).await.as_u64().unwrap();

    // Off, PXE once, on: the page's own buttons, each verified by the BMC.
    b.click("[data-action=power-off]").await;
    b.wait(
        "power off",
        Duration::from_secs(60),
        "return document.getElementById('power-state')?.textContent === 'off'",
    )
    .await;
    b.click("[data-action=boot-pxe]").await;
    b.wait(
        "the boot device in the timeline",
        SHORT,
        "return [...document.querySelectorAll('#timeline-chart title')].some(t => t.textContent.includes('pxe'))",
    )
    .await;
    b.click("[data-action=power-on]").await;
    b.wait(
        "power on",
        Duration::from_secs(60),
        "return document.getElementById('power-state')?.textContent === 'on'",
    )
    .await;

    // The chart grows while the machine boots: DHCP, the iPXE script, the
    // kernel and initrd over HTTP. Count how often it grew.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut seen = vec![first_boot];
    loop {
        let n = b.js(CHART_EVENTS, vec![]).await.as_u64().unwrap_or(0);
        if n != *seen.last().unwrap() {
            seen.push(n);
        }
        let kernel = b
            .js(
                "return [...document.querySelectorAll('#timeline-chart g.http title')]\
                 .filter(t => t.textContent.includes('vmlinuz')).length",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(0);
        // The discovery boot fetched no kernel; the profile boot does.
        if kernel >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second boot's kernel download never reached the chart (events seen {seen:?});\nserver log:\n{}",
            rack.server_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.len() >= 3,
        "the chart should grow in several steps while the machine boots: {seen:?}"
    );
    if let Err(e) = bmc.wait_for_serial(MARKER, 0, BOOT_TIMEOUT).await {
        panic!("{e}\nserver log:\n{}", rack.server_log());
    }
    let lanes = b
        .js(
            "return ['dhcp', 'http', 'power'].map(c => document.querySelectorAll(`#timeline-chart g.${c}`).length)",
            vec![],
        )
        .await;
    let lanes: Vec<u64> = serde_json::from_value(lanes).unwrap();
    assert!(
        lanes.iter().all(|n| *n >= 2),
        "two DHCP exchanges, HTTP downloads and power actions on the chart: {lanes:?}"
    );
    assert_eq!(
        b.js("return window.__notReloaded === true", vec![]).await,
        Value::Bool(true),
        "the page was reloaded"
    );
    b.js(
        "document.getElementById('timeline-chart').scrollIntoView({block: 'center'})",
        vec![],
    )
    .await;
    b.screenshot(&screenshot_path("dashboard-machine.png"))
        .await;
    println!(
        "booted Linux, chart grew {seen:?}, after {:?}",
        started.elapsed()
    );
}

/// Calls the API of `server` with the admin token.
async fn api_call(server: &sim::Server, method: reqwest::Method, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", server.url))
        .bearer_auth(admin_token(&server.state))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A few dozen machines with labels, so the fleet page has something to show.
fn enrol_rack(server: &sim::Server, count: usize) {
    let mut csv = String::from("name,macs,labels\n");
    for i in 1..=count {
        csv.push_str(&format!(
            "rack2-node{i:02},52:54:00:bb:00:{i:02x},rack=r2;role={}\n",
            if i % 3 == 0 { "storage" } else { "compute" }
        ));
    }
    let path = server.state.parent().unwrap().join("rack2.csv");
    std::fs::write(&path, csv).unwrap();
    server.ok(&["machine", "import", path.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_deploy_shows_live_progress() {
    if !rackboot_testenv::programs(&["chromium", "chromedriver"]) {
        return;
    }
    let started = Instant::now();
    let server = sim::Server::start("");
    sim::fake_ramdisk(&server);
    sim::import_incompressible(&server, "debian-12", 96);
    let m = sim::sim_machine(&server, "rack1-node07", 128, None);
    enrol_rack(&server, 24);
    // One machine in maintenance: the counts say so.
    api_call(
        &server,
        reqwest::Method::PUT,
        "/machines/rack2-node05/maintenance",
        json!({"reason": "fan replacement"}),
    )
    .await;

    let b = Browser::start(1280, 900).await;
    sign_in(&b, &server.url, &admin_token(&server.state)).await;
    b.wait(
        "the fleet table with every machine",
        SHORT,
        "return document.querySelector('#machine-table')?.dataset.total === '25'",
    )
    .await;
    // Filters are the server's: a label and a name.
    b.type_into("input[name=label]", "role=storage").await;
    b.wait(
        "the label filter",
        SHORT,
        "return document.querySelector('#machine-table')?.dataset.total === '8'",
    )
    .await;
    b.js(
        "const i = document.querySelector('input[name=label]'); i.value = ''; i.dispatchEvent(new Event('input'))",
        vec![],
    )
    .await;
    b.wait(
        "all machines again",
        SHORT,
        "return document.querySelector('#machine-table')?.dataset.total === '25'",
    )
    .await;

    // The event stream resumes where it left off: events made while the
    // page was disconnected arrive after it reconnects (Last-Event-ID).
    b.goto(&format!("{}/#/events?kind=maintenance_changed", server.url))
        .await;
    b.wait(
        "the events page",
        SHORT,
        "return document.querySelector('#event-table') !== null && window.rackboot.live.connected",
    )
    .await;
    b.js("window.rackboot.stopLive()", vec![]).await;
    api_call(
        &server,
        reqwest::Method::PUT,
        "/machines/rack2-node09/maintenance",
        json!({"reason": "while the page was away"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b.js(
            "return document.getElementById('event-table').textContent.includes('rack2-node09')",
            vec![]
        )
        .await
        .as_bool()
        .unwrap(),
        "the event arrived while disconnected"
    );
    b.js("window.rackboot.startLive()", vec![]).await;
    b.wait(
        "the missed event after the reconnect",
        SHORT,
        "return document.getElementById('event-table').textContent.includes('rack2-node09') && window.rackboot.live.connects >= 2",
    )
    .await;

    b.goto(&format!("{}/#/", server.url)).await;
    b.click("#machine-table a[href='#/machines/rack1-node07']")
        .await;
    b.find("#deploy-image", SHORT).await;
    b.click("[data-action=deploy]").await;
    b.wait(
        "the deploy workflow on the page",
        SHORT,
        "return document.getElementById('workflow-state')?.textContent",
    )
    .await;

    // The machine network-boots the RAM-disk: the test plays its firmware
    // (fetches the boot script) and starts the agent it would run.
    let token = tokio::task::spawn_blocking({
        let url = server.url.clone();
        let state = server.state.clone();
        move || agent_token_at(&url, &state)
    })
    .await
    .unwrap();
    let mut agent = sim::start_paced_agent(&server, &token, &m, 6);

    // Bytes written and the rate, live, while the image goes to disk.
    let shown = b
        .wait(
            "write progress with bytes and rate",
            Duration::from_secs(60),
            "const p = document.querySelector('.live-progress'); \
             return p && p.querySelector('.rate') && p.querySelector('progress') ? p.textContent : null",
        )
        .await;
    let shown = shown.as_str().unwrap().to_string();
    assert!(shown.contains("MiB") && shown.contains("/s"), "{shown}");
    b.js(
        "document.querySelector('.live-progress').scrollIntoView({block: 'center'})",
        vec![],
    )
    .await;
    b.screenshot(&screenshot_path("dashboard-deploy.png")).await;

    // The fleet page meanwhile: counts with the busy machine, the table.
    b.goto(&format!("{}/#/", server.url)).await;
    b.wait(
        "the deploying machine in the counts",
        SHORT,
        "return [...document.querySelectorAll('.card .label')].some(l => l.textContent === 'deploying')",
    )
    .await;
    b.screenshot(&screenshot_path("dashboard-fleet.png")).await;

    // The agent reboots into the installed system, which calls home.
    let status = tokio::task::spawn_blocking(move || {
        sim::wait_for("the agent's reboot", Duration::from_secs(120), || {
            agent.try_wait().unwrap()
        })
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(10), "{}", server.log());
    sim::call_booted(&m);
    b.goto(&format!("{}/#/machines/rack1-node07", server.url))
        .await;
    // Both are shown from the machine and its workflow, which the page
    // reads separately.
    b.wait(
        "the machine active and its workflow succeeded",
        Duration::from_secs(60),
        "return document.getElementById('machine-state')?.textContent === 'active' && \
         document.getElementById('workflow-state')?.textContent === 'succeeded'",
    )
    .await;
    println!("deployed through the dashboard in {:?}", started.elapsed());
}

/// As `sim::agent_token`, for a server known by URL and state directory.
fn agent_token_at(url: &str, _state: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("{url}/boot/ipxe/{}", sim::MAC.replace(':', "-")))
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(word) = script
            .split_whitespace()
            .find(|w| w.starts_with("rackboot.token="))
        {
            return word.trim_start_matches("rackboot.token=").to_string();
        }
        assert!(Instant::now() < deadline, "no agent boot script:\n{script}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_token_sees_no_action_buttons() {
    if !rackboot_testenv::programs(&["chromium", "chromedriver"]) {
        return;
    }
    let server = sim::Server::start("");
    sim::sim_machine(
        &server,
        "rack1-node01",
        16,
        Some("ipmi://admin:pw@127.0.0.1:9"),
    );
    let created = api_call(
        &server,
        reqwest::Method::POST,
        "/tokens",
        json!({"name": "watcher", "role": "viewer"}),
    )
    .await;
    let viewer = created["token"]
        .as_str()
        .unwrap_or_else(|| panic!("POST /api/v1/tokens (roles): {created}"))
        .to_string();

    // The admin sees the actions, the viewer none.
    for (token, role, actions) in [
        (admin_token(&server.state), "admin", true),
        (viewer, "viewer", false),
    ] {
        let b = Browser::start(1024, 800).await;
        sign_in(&b, &server.url, &token).await;
        let who = b
            .js(
                "return document.getElementById('who-name').textContent",
                vec![],
            )
            .await;
        assert!(who.as_str().unwrap().contains(role), "{who}");
        b.wait(
            "the fleet table",
            SHORT,
            "return document.querySelector('#machine-table') !== null",
        )
        .await;
        assert_eq!(
            b.exists("#machine-table input[type=checkbox]").await,
            actions,
            "{role}: selection for bulk actions"
        );
        b.goto(&format!("{}/#/machines/rack1-node01", server.url))
            .await;
        b.wait(
            "the machine page",
            SHORT,
            if actions {
                "return document.getElementById('power-state') !== null && \
                 document.querySelectorAll('.actions button').length > 0"
            } else {
                "return document.getElementById('power-state') !== null"
            },
        )
        .await;
        let buttons = b
            .js(
                "return [...document.querySelectorAll('.actions button')].map(b => b.textContent)",
                vec![],
            )
            .await;
        let buttons: Vec<String> = serde_json::from_value(buttons).unwrap();
        if actions {
            for want in ["Power on", "Power off", "Inspect"] {
                assert!(buttons.iter().any(|b| b == want), "{role}: {buttons:?}");
            }
        } else {
            assert!(buttons.is_empty(), "{role} sees actions: {buttons:?}");
        }
        b.goto(&format!("{}/#/catalog", server.url)).await;
        b.wait(
            "the catalog",
            SHORT,
            "return document.querySelector('#catalog-templates h2') !== null && \
             !document.querySelector('#catalog-templates').textContent.includes('loading')",
        )
        .await;
        assert_eq!(
            b.exists("#template-upload").await,
            actions,
            "{role}: template upload"
        );
        if actions {
            // A template that does not parse is refused, and the page says where.
            b.type_into("#template-upload input[name=name]", "broken")
                .await;
            b.type_into(
                "#template-upload textarea[name=source]",
                "d-i passwd/root-password-crypted {{ root_password_hash }}\n{% if %}\n",
            )
            .await;
            b.click("#template-upload button[type=submit]").await;
            let error = b
                .wait(
                    "the template's validation error",
                    SHORT,
                    "return document.getElementById('template-error')?.textContent",
                )
                .await;
            let error = error.as_str().unwrap();
            assert!(error.contains("line 2"), "{error}");
        }
    }
}

/// A server for the benchmark: `RACKBOOT_BIN` (a release build, say) or
/// this test's binary, on loopback with its API and nothing else.
struct BenchServer {
    child: std::process::Child,
    url: String,
    bin: String,
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl BenchServer {
    fn start() -> BenchServer {
        let bin = std::env::var("RACKBOOT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rackboot").to_string());
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let port = sim::free_port();
        let config = dir.path().join("rackboot.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nserver_ip = \"127.0.0.1\"\n[listen]\nhttp = \"127.0.0.1:{port}\"\ntftp = \"off\"\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = BenchServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            bin,
            state,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.state.join("admin-token").exists()
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the benchmark server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(&self.bin)
            .args(args)
            .env("RACKBOOT_URL", &self.url)
            .env("RACKBOOT_STATE_DIR", &self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rackboot {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Page weight and speed at 10,000 machines (a benchmark: bench/ui.sh).
/// Prints `key=value` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: enrols 10,000 machines"]
async fn fleet_page_weight_and_render_time_at_10000_machines() {
    if !rackboot_testenv::programs(&["chromium", "chromedriver"]) {
        return;
    }
    let machines: usize = std::env::var("UI_BENCH_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let server = BenchServer::start();
    let mut csv = String::from("name,macs,labels\n");
    for i in 0..machines {
        csv.push_str(&format!(
            "r{:03}-n{:03},02:00:00:{:02x}:{:02x}:{:02x},rack=r{:03};role={}\n",
            i / 40,
            i % 40,
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            i / 40,
            if i % 4 == 0 { "storage" } else { "compute" }
        ));
    }
    let path = server.state.parent().unwrap().join("fleet.csv");
    std::fs::write(&path, csv).unwrap();
    let t = Instant::now();
    server.cli(&["machine", "import", path.to_str().unwrap()]);
    println!("machines={machines}");
    println!("import_secs={:.1}", t.elapsed().as_secs_f64());

    let b = Browser::start(1280, 900).await;
    // First load: the sign-in page and everything it loads, from a cold cache.
    b.goto(&format!("{}/", server.url)).await;
    b.find("#token", SHORT).await;
    let weight = b
        .js(
            "const n = performance.getEntriesByType('navigation')[0];              const r = performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/'));              return {document: n.transferSize, decoded: n.decodedBodySize + r.reduce((a, e) => a + e.decodedBodySize, 0),                      transfer: n.transferSize + r.reduce((a, e) => a + e.transferSize, 0), files: r.length + 1,                      load_ms: n.loadEventEnd - n.startTime}",
            vec![],
        )
        .await;
    println!("first_load_files={}", weight["files"]);
    println!("first_load_bytes={}", weight["transfer"]);
    println!("first_load_decoded_bytes={}", weight["decoded"]);
    println!(
        "first_load_ms={:.0}",
        weight["load_ms"].as_f64().unwrap_or(0.0)
    );
    sign_in(&b, &server.url, &admin_token(&server.state)).await;
    b.wait(
        "the fleet table",
        Duration::from_secs(60),
        "return document.querySelector('#machine-table') !== null",
    )
    .await;

    // From navigation to the fleet table drawn, cold cache, signed in.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..6 {
        if round < 3 {
            b.cdp("Network.clearBrowserCache", json!({})).await;
        }
        b.js("location.reload()", vec![]).await;
        let ms = b
            .wait(
                "the fleet table after a reload",
                Duration::from_secs(60),
                "const r = window.rackboot && window.rackboot.fleetRender;                  return r && document.querySelector('#machine-table') ? r.at - performance.timeOrigin : null",
            )
            .await
            .as_f64()
            .unwrap();
        let total = b
            .js(
                "return document.querySelector('#machine-table').dataset.total",
                vec![],
            )
            .await;
        assert_eq!(total, machines.to_string());
        if round < 3 {
            cold.push(ms)
        } else {
            warm.push(ms)
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!("fleet_table_cold_ms={:.0}", median(&mut cold));
    println!("fleet_table_warm_ms={:.0}", median(&mut warm));

    // Bigger pages, a filter and a sort, each timed from request to table drawn.
    for (what, script) in [
        (
            "rows_1000",
            "const s = document.querySelector('select[name=limit]'); s.value = '1000'; s.dispatchEvent(new Event('change'))",
        ),
        (
            "filter_label",
            "const i = document.querySelector('input[name=label]'); i.value = 'role=storage'; i.dispatchEvent(new Event('input'))",
        ),
        (
            "sort_state",
            "document.querySelectorAll('th button.sort')[1].click()",
        ),
    ] {
        let before = b.js("return window.rackboot.fleetRender.at", vec![]).await;
        b.js(script, vec![]).await;
        let ms = b
            .wait(
                what,
                Duration::from_secs(60),
                &format!(
                    "const r = window.rackboot.fleetRender; return r.at > {before} && r.at > 0 ? r.ms : null"
                ),
            )
            .await;
        println!("{what}_ms={:.0}", ms.as_f64().unwrap());
    }
}

/// The dashboard's pure parts, run in the browser that runs them for people:
/// the timeline model drawn from a boot's events, and the SSE parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_model_and_event_stream_parser() {
    if !rackboot_testenv::programs(&["chromium", "chromedriver"]) {
        return;
    }
    let server = sim::Server::start("");
    let b = Browser::start(1024, 768).await;
    b.goto(&format!("{}/", server.url)).await;
    b.find("#token", SHORT).await;
    let got = b
        .js_async(
            r#"
            const { buildTimeline, sessions, tickStep } = await import("/ui/timeline.js");
            const { parseSse } = await import("/ui/live.js");
            const t0 = Date.parse("2026-12-07T10:00:00Z");
            const ev = (id, s, kind, data = {}, message = kind) =>
                ({ id, at: new Date(t0 + s * 1000).toISOString(), kind, mac: "52:54:00:00:00:01", data, message });
            const events = [
                ev(1, 0, "lease_offered"),
                ev(2, 1.5, "lease_acked", { ip: "10.77.0.100" }),
                ev(3, 3, "tftp_sent", { file: "undionly.kpxe", bytes: 70000, duration_ms: 1000 }),
                ev(4, 3.2, "script_served"),
                ev(5, 6, "asset_served", { path: "assets/vmlinuz", bytes: 8e6 }),
                ev(6, 8, "asset_served", { path: "assets/initrd", bytes: 3e7, duration_ms: 1500 }),
                ev(7, 9, "step_started", { workflow: "w", step: "write_image" }),
                ev(8, 39, "step_succeeded", { workflow: "w", step: "write_image" }),
                ev(9, 40, "power_action_done", { final_state: "on", elapsed: 800 }),
                ev(10, 41, "step_started", { workflow: "w", step: "wait_boot" }),
            ];
            const m = buildTimeline(events);
            const items = m.items.map(i => [i.lane, i.kind, i.label, Math.round(i.start - t0), i.kind === "span" ? Math.round(i.end - i.start) : 0]);
            const later = ev(11, 41 + 11 * 60, "lease_offered");
            const chunked = parseSse("id: 5\nevent: lease_acked\ndata: {\"a\":\ndata: 1}\n\n: keep-alive\n\nid: 6\r\ndata: x\r\n\r\nid: 7\ndata: part");
            return {
                items,
                start: m.start - t0,
                sessions: sessions([...events, later]).map(s => s.length),
                ticks: [tickStep(45e3), tickStep(3 * 3600e3), tickStep(800)],
                sse: chunked.events.map(e => [e.id, e.event, e.data]),
                rest: chunked.rest,
            };
            "#,
        )
        .await;
    let items: Vec<Value> = serde_json::from_value(got["items"].clone()).unwrap();
    let item = |lane: &str, label: &str| -> Value {
        items
            .iter()
            .find(|i| i[0] == lane && i[2].as_str().unwrap().starts_with(label))
            .cloned()
            .unwrap_or_else(|| panic!("no {lane} {label} in {items:?}"))
    };
    // [lane, kind, label, start ms, duration ms]
    assert_eq!(
        item("DHCP", "DHCP 10.77.0.100"),
        json!(["DHCP", "span", "DHCP 10.77.0.100", 0, 1500])
    );
    assert_eq!(
        item("TFTP", "undionly"),
        json!(["TFTP", "span", "undionly.kpxe", 2000, 1000])
    );
    assert_eq!(
        item("HTTP", "script"),
        json!(["HTTP", "mark", "script", 3200, 0])
    );
    assert_eq!(
        item("HTTP", "vmlinuz"),
        json!(["HTTP", "mark", "vmlinuz", 6000, 0])
    );
    assert_eq!(
        item("HTTP", "initrd"),
        json!(["HTTP", "span", "initrd", 6500, 1500])
    );
    assert_eq!(
        item("Steps", "write_image"),
        json!(["Steps", "span", "write_image", 9000, 30000])
    );
    assert_eq!(
        item("Power & boot", "power on"),
        json!(["Power & boot", "span", "power on", 39200, 800])
    );
    // A step still running reaches to now.
    let running = item("Steps", "wait_boot");
    assert_eq!(running[1], "span");
    assert!(running[4].as_i64().unwrap() > 0, "{running}");
    assert_eq!(items.len(), 8, "{items:?}");
    assert_eq!(got["start"], 0);
    assert_eq!(got["sessions"], json!([10, 1]));
    assert_eq!(got["ticks"], json!([10000, 1800000, 100]));
    assert_eq!(
        got["sse"],
        json!([["5", "lease_acked", "{\"a\":\n1}"], ["6", "message", "x"]])
    );
    assert_eq!(got["rest"], "id: 7\ndata: part");
}
