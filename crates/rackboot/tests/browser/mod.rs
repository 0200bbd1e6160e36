//! Browser tests' harness: a small W3C WebDriver client talking HTTP to
//! Debian's `chromedriver`, which drives headless `chromium`; and a TCP relay
//! through which that browser (in the host's network namespace) reaches a
//! server inside a lab namespace.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// W3C's key for element references in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process and one browser session in it. Dropped: the
/// session is closed (Chromium exits) and chromedriver is killed.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    port: u16,
    session_id: String,
    driver: Child,
}

impl Browser {
    /// Headless Chromium with a `width` x `height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: apt-get install chromium chromium-driver (scripts/install-deps)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .map(|v| v["value"]["ready"] == true)
                    .unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--force-device-scale-factor=1",
                    "--force-color-profile=srgb", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .unwrap();
        let session_id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Browser {
            http,
            session: format!("{base}/session/{session_id}"),
            port,
            session_id,
            driver,
        }
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with
    /// its message.
    pub async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// One WebDriver command; its `value`, or its error and message.
    pub async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer["value"]["error"].as_str() {
            Some(err) => Err(format!(
                "{err}: {}",
                answer["value"]["message"].as_str().unwrap_or("")
            )),
            None => Ok(answer["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` as an async function body in the page; its `return`
    /// (or the value of the promise it returns).
    pub async fn js_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; \
             (async () => {{ {script} }})().then(v => done({{ok: v}}), e => done({{err: String(e && e.stack || e)}}));"
        );
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({ "script": wrapped, "args": [] })),
            )
            .await;
        if let Some(err) = v.get("err") {
            panic!("script failed: {}", err.as_str().unwrap_or(""));
        }
        v["ok"].clone()
    }

    /// Polls `script` until it returns something other than null, false,
    /// 0 or ""; returns it. Panics after `timeout`, with the page's text.
    pub async fn wait(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, vec![]).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.js("return document.body.innerText", vec![]).await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The first element matching `css`, waited for.
    pub async fn find(&self, css: &str, timeout: Duration) -> String {
        let script = format!(
            "return document.querySelector({}) !== null",
            serde_json::to_string(css).unwrap()
        );
        self.wait(&format!("an element {css}"), timeout, &script)
            .await;
        let found = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver found {css} as {found}"))
            .to_string()
    }

    /// Clicks the element `css` as a user would (WebDriver's element click:
    /// scrolled into view, refused when something covers it). Live pages
    /// redraw: an element replaced between finding and clicking is found again.
    pub async fn click(&self, css: &str) {
        for _ in 0..10 {
            let id = self.find(css, Duration::from_secs(20)).await;
            match self
                .try_cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return,
                Err(e) if e.starts_with("stale element reference") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("WebDriver click {css}: {e}"),
            }
        }
        panic!("WebDriver click {css}: the element kept being replaced");
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css, Duration::from_secs(20)).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Whether an element matches `css` now.
    pub async fn exists(&self, css: &str) -> bool {
        let script = format!(
            "return document.querySelector({}) !== null",
            serde_json::to_string(css).unwrap()
        );
        self.js(&script, vec![]).await == Value::Bool(true)
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let data = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// A Chrome DevTools command (e.g. `Network.clearBrowserCache`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; plain blocking HTTP, as Drop
        // cannot await.
        if let Ok(mut s) = StdStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session_id
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Forwards connections to a loopback port into a network namespace: the
/// browser runs in the host's namespace and the lab's server inside its own.
/// Connections into the namespace are made by a thread that entered it.
pub struct Relay {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

type Connect = std::sync::mpsc::Sender<std::io::Result<StdStream>>;

impl Relay {
    pub async fn into_netns(netns: &str, target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, incoming) = std::sync::mpsc::channel::<Connect>();
        let ns = std::fs::File::open(format!("/run/netns/{netns}"))
            .unwrap_or_else(|e| panic!("opening network namespace {netns}: {e}"));
        std::thread::spawn(move || {
            // SAFETY: setns on a namespace file held open; it changes only
            // this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            let entered = if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            for reply in incoming {
                let stream = match &entered {
                    Ok(()) => StdStream::connect_timeout(&target, Duration::from_secs(5)),
                    Err(e) => Err(std::io::Error::new(e.kind(), format!("setns: {e}"))),
                };
                let _ = reply.send(stream);
            }
        });
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (reply, answer) = std::sync::mpsc::channel();
                if requests.send(reply).is_err() {
                    break;
                }
                let outbound = tokio::task::spawn_blocking(move || answer.recv())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .and_then(|r| r.ok());
                let Some(outbound) = outbound else { continue };
                if outbound.set_nonblocking(true).is_err() {
                    continue;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::from_std(outbound) else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Relay { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Signs in on the dashboard at `base` with `token` and waits for the live
/// stream to connect.
pub async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await;
    b.type_into("#token", token).await;
    b.click("#signin button[type=submit]").await;
    b.wait(
        "signing in and the live event stream",
        Duration::from_secs(20),
        "return document.getElementById('who-name') !== null && window.rackboot.live.connected",
    )
    .await;
}

/// Where screenshots go: `RACKBOOT_SCREENSHOTS` (e.g. `docs` to refresh the
/// README's), else a directory under the system's temp dir.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    match std::env::var_os("RACKBOOT_SCREENSHOTS") {
        Some(dir) => std::path::PathBuf::from(dir).join(name),
        None => std::env::temp_dir().join("rackboot-screenshots").join(name),
    }
}
