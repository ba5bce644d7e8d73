//! Headless Chromium through ChromeDriver, driven with `fantoccini`.
//!
//! One `chromedriver` serves the whole test binary: it starts on a free 127.0.0.1 port the first time
//! a test asks for it, in a process group of its own, watched by a small `sh` that holds our end of a
//! pipe on its stdin. When the pipe closes (the test binary ends, even by a panic or a signal that
//! skips destructors; a `static` is never dropped) the watcher stops the whole group, so ChromeDriver
//! and every Chromium it started, and removes the driver's folder with the browser profiles.
//!
//! Each test opens its own [`Page`]: a new WebDriver session, so a new Chromium with a fresh, empty
//! profile (no shared cookies between tests). The session ends on [`Page::close`], or when the
//! `Page` is dropped (a failing test), with a plain blocking `DELETE /session/{id}`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium's switches (the issue's list, and no QUIC); ChromeDriver adds its own automation ones.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
];

/// How long one wait for the page may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// The viewport of every page, so that screenshots have one size.
const WINDOW: (u32, u32) = (1100, 820);

/// `target/e2e-screenshots/` (next to `target/tmp`, whichever target directory cargo uses).
pub fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("e2e-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/e2e-screenshots");
    dir
}

// -------------------------------------------------------------------------------------------------
// ChromeDriver

/// The ChromeDriver of this test binary.
pub struct Driver {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub addr: SocketAddr,
    /// Holds ChromeDriver's log and the browser profiles; removed by the watcher.
    pub dir: PathBuf,
    child: Child,
    watcher: Child,
    lifeline: Option<ChildStdin>,
}

static DRIVER: OnceLock<Driver> = OnceLock::new();

/// The shared ChromeDriver, started on first use.
pub fn driver() -> &'static Driver {
    DRIVER.get_or_init(Driver::start)
}

/// Stops the process group `$1` once our end of its stdin closes, then removes the folder `$2`.
const WATCHER: &str = r#"
read -r _ignored
kill -TERM "-$1" 2>/dev/null
sleep 1
kill -KILL "-$1" 2>/dev/null
if [ -z "$ASSENT_TEST_KEEP" ]; then rm -rf "$2"; fi
"#;

impl Driver {
    fn start() -> Driver {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install Debian's `chromium` and `chromium-driver` (scripts/test does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("assent-browser-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let log = dir.join("chromedriver.log");
        // A free port can be taken between our probe and ChromeDriver's bind: try a few.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
                l.local_addr().unwrap().port()
            };
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // A group of its own, so the watcher stops the browsers with it.
                .process_group(0)
                .spawn()
                .expect("spawn chromedriver");
            let pgid = child.id();
            let mut watcher = Command::new("sh")
                .arg("-c")
                .arg(WATCHER)
                .arg("sh")
                .arg(pgid.to_string())
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the chromedriver watcher");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            match wait_ready(&mut child, addr) {
                Ok(()) => {
                    let lifeline = watcher.stdin.take();
                    return Driver {
                        url: format!("http://127.0.0.1:{port}"),
                        addr,
                        dir,
                        child,
                        watcher,
                        lifeline,
                    };
                }
                Err(e) => {
                    last_error = e;
                    // This attempt's watcher goes first (killed, it removes nothing), then its driver.
                    let _ = watcher.kill();
                    let _ = watcher.wait();
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!("chromedriver did not start: {last_error}; log:\n{log}");
    }
}

/// Waits until ChromeDriver answers `GET /status` with `ready`.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromedriver exited with {status}"));
        }
        if let Some(answer) = http_blocking(addr, "GET", "/status", Duration::from_secs(2)) {
            if answer.contains("\"ready\":true") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("not ready within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Closing the pipe makes the watcher stop the group (ChromeDriver and its browsers).
        drop(self.lifeline.take());
        let _ = self.watcher.wait();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 exchange with ChromeDriver (for `Drop`, where nothing may await).
/// Returns the response body, or `None` on any error. ChromeDriver keeps the connection open
/// whatever `Connection` says, so the body is read by its `Content-Length`.
fn http_blocking(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            if response.len() >= end + 4 + length {
                let body = &response[end + 4..end + 4 + length];
                return Some(String::from_utf8_lossy(body).into_owned());
            }
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..n]);
    }
}

// -------------------------------------------------------------------------------------------------
// A page in a fresh Chromium

/// A Chromium of its own (fresh profile) with one tab, on the console at `base`.
pub struct Page {
    client: Option<Client>,
    session: String,
    driver: &'static Driver,
    /// The server the page talks to: `http://127.0.0.1:<port>`.
    pub base: String,
    /// A prefix for screenshot names (the test's name).
    pub name: String,
    _profile: tempfile::TempDir,
}

impl Page {
    /// Starts a headless Chromium with an empty profile and opens `base` + `/`.
    pub async fn open(base: &str, name: &str) -> Page {
        let driver = driver();
        let profile = tempfile::Builder::new()
            .prefix("profile-")
            .tempdir_in(&driver.dir)
            .expect("browser profile folder");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        // Lets the test read the page's console (CSP violations, script errors).
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session from chromedriver: {e}; chromedriver log tail:\n{}",
                    tail(&driver.dir.join("chromedriver.log"), 40)
                )
            });
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a W3C session id");
        let page = Page {
            client: Some(client),
            session,
            driver,
            base: base.trim_end_matches('/').to_string(),
            name: name.to_string(),
            _profile: profile,
        };
        page.client()
            .set_window_size(WINDOW.0, WINDOW.1)
            .await
            .expect("set the window size");
        page.goto("/").await;
        page
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the page is open")
    }

    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client()
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Ends the WebDriver session (and so the browser).
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }

    /// A POST to this session's ChromeDriver endpoint `path` (vendor commands fantoccini lacks).
    pub async fn driver_post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.driver.url, self.session);
        let resp = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {url}: {status} {body}");
        body["value"].clone()
    }

    /// Grants a permission (`clipboard-read`, …) to the page's origin (WebDriver "Set Permission").
    pub async fn grant(&self, permission: &str) {
        self.driver_post(
            "permissions",
            json!({ "descriptor": { "name": permission }, "state": "granted" }),
        )
        .await;
    }

    /// A Chrome DevTools Protocol command, through ChromeDriver's `goog/cdp/execute`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.driver_post("goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    /// A viewport `width` CSS pixels wide (a small phone is 320), until the page closes.
    pub async fn narrow(&self, width: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": 720, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        let seen = self.js("return window.innerWidth;", vec![]).await;
        assert_eq!(seen, json!(width), "the viewport did not narrow");
    }

    /// `prefers-color-scheme: dark`, until the page closes.
    pub async fn dark(&self) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
        )
        .await;
        let seen = self
            .js(
                "return matchMedia('(prefers-color-scheme: dark)').matches;",
                vec![],
            )
            .await;
        assert_eq!(seen, json!(true), "the page is not in dark mode");
    }

    /// The browser console's messages at level SEVERE since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .driver_post("se/log", json!({ "type": "browser" }))
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    // ---------------------------------------------------------------------------------------------
    // Reading and acting on the page

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its JSON result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The element's `textContent` (trimmed), or panics when there is no such id.
    pub async fn text(&self, id: &str) -> String {
        let v = self
            .js(
                "const e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null;",
                vec![json!(id)],
            )
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("no element #{id}"))
            .to_string()
    }

    /// An input's current value.
    pub async fn value(&self, id: &str) -> String {
        self.client()
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    /// WebDriver's "is displayed" for the element with this id.
    pub async fn displayed(&self, id: &str) -> bool {
        self.client()
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
            .is_displayed()
            .await
            .expect("is displayed")
    }

    pub async fn dialog_open(&self, id: &str) -> bool {
        self.js(
            "const d = document.getElementById(arguments[0]); return !!d && d.open;",
            vec![json!(id)],
        )
        .await
            == json!(true)
    }

    pub async fn click(&self, id: &str) {
        self.client()
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    /// Types `text` into the (emptied) field, as a user would.
    pub async fn fill(&self, id: &str, text: &str) {
        let el = self
            .client()
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"));
        el.clear()
            .await
            .unwrap_or_else(|e| panic!("clear #{id}: {e}"));
        el.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into #{id}: {e}"));
    }

    /// Polls `script` until it returns something other than `null`, `false` or `""`, and returns
    /// that. On timeout, saves a screenshot and fails with what the page showed.
    pub async fn wait_js(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.client().execute(script, args.clone()).await {
                Ok(v) if !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") => {
                    return v
                }
                Ok(v) => last = v,
                Err(e) => last = json!(format!("script error: {e}")),
            }
            if Instant::now() > deadline {
                let shot = self.screenshot(&format!("FAILED-{}", slug(what))).await;
                let state = self.state().await;
                panic!(
                    "{}: waited {timeout:?} for {what}; last result {last}\npage: {state:#}\nscreenshot: {}",
                    self.name,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element is rendered (in the layout, not `hidden`, not `visibility: hidden`).
    pub async fn wait_visible(&self, id: &str) {
        self.wait_js(
            &format!("#{id} to be visible"),
            WAIT,
            "const e = document.getElementById(arguments[0]);
             return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';",
            vec![json!(id)],
        )
        .await;
    }

    /// Waits until the element's text contains `needle`; returns the whole text.
    pub async fn wait_text(&self, id: &str, needle: &str, timeout: Duration) -> String {
        self.wait_js(
            &format!("#{id} to say {needle:?}"),
            timeout,
            "const e = document.getElementById(arguments[0]);
             const t = e ? e.textContent.trim() : '';
             return t.includes(arguments[1]) ? t : null;",
            vec![json!(id), json!(needle)],
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
    }

    /// Waits until the `<dialog>` is open.
    pub async fn wait_dialog(&self, id: &str) {
        self.wait_js(
            &format!("dialog #{id} to open"),
            WAIT,
            "const d = document.getElementById(arguments[0]); return !!d && d.open;",
            vec![json!(id)],
        )
        .await;
    }

    /// What the page shows, for failure messages.
    pub async fn state(&self) -> Value {
        self.client()
            .execute(
                "const t = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
                 return {
                   url: location.href,
                   open_dialogs: [...document.querySelectorAll('dialog[open]')].map((d) => d.id),
                   signin_message: t('signin-message'),
                   dirsync_message: t('dirsync-message'),
                   devices_message: t('devices-message'),
                   challenge_number: t('challenge-number'),
                   challenge_status: t('challenge-status'),
                   reauth_message: t('reauth-message'),
                   token_copied: t('token-copied'),
                 };",
                vec![],
            )
            .await
            .unwrap_or_else(|e| json!(format!("page unreadable: {e}")))
    }

    /// Saves a PNG of the viewport as `target/e2e-screenshots/<test>-<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        // The page from its top (the header), whatever focusing scrolled; a modal dialog stays centred.
        let _ = self
            .client()
            .execute("window.scrollTo(0, 0);", vec![])
            .await;
        let png = self.client().screenshot().await.expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        let path = screenshot_dir().join(format!("{}-{name}.png", self.name));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // A test that failed before `close`: end the session so ChromeDriver stops its Chromium.
        if self.client.take().is_some() {
            let _ = http_blocking(
                self.driver.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                Duration::from_secs(15),
            );
        }
    }
}

fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(60);
    out
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
