//! Headless Chromium driven over the W3C WebDriver protocol by chromedriver: the few commands the
//! dashboard test needs, on [`crate::http::Http`].

use crate::http::Http;
use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long to wait for the page to show something before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A chromedriver process and one browser session: end it with [`Browser::quit`]; chromedriver
/// stops when dropped.
pub struct Browser {
    driver: Child,
    http: Http,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session. Panics, never skips,
    /// when either is missing: `scripts/test` installs them.
    pub async fn start() -> Browser {
        for tool in ["chromedriver", "chromium"] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{tool} is not installed: run scripts/test, or `apt-get install chromium chromium-driver`"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = Http::default();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            http,
            session: String::new(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let url = format!("{base}/status");
            let status = browser.http.try_send(Method::GET, &url, None, None);
            if let Ok(res) = status.await
                && res.status == StatusCode::OK
                && res.json()["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium"),
                // No sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100"]
            }
        }}});
        let res = browser
            .http
            .send(Method::POST, &format!("{base}/session"), None, Some(&caps))
            .await;
        assert_eq!(res.status, StatusCode::OK, "new session: {}", res.body);
        browser.session = format!(
            "{base}/session/{}",
            res.json()["value"]["sessionId"].as_str().unwrap()
        );
        browser
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let body = body.or_else(|| (method == Method::POST).then(|| json!({})));
        let res = self.http.send(method, &url, None, body.as_ref()).await;
        assert_eq!(res.status, StatusCode::OK, "{path}: {}", res.body);
        res.json()["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The elements matching a CSS selector now (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .command(
                Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let refs = found.as_array().map(|a| {
            a.iter()
                .map(|e| e[ELEMENT].as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        refs.flatten()
            .unwrap_or_else(|| panic!("{css}: not a list of elements: {found}"))
    }

    /// Waits until `ready` holds for the text of the first element matching `css`, and returns
    /// that text; fails the test after [`PATIENCE`] with what was last seen.
    pub async fn wait_for_text(&self, css: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            if let Some(e) = self.find_all(css).await.first() {
                last = self.text(e).await;
                if ready(&last) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed what was expected; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn text(&self, element: &str) -> String {
        let v = self
            .command(Method::GET, &format!("/element/{element}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    pub async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        let v = self
            .command(
                Method::GET,
                &format!("/element/{element}/attribute/{name}"),
                None,
            )
            .await;
        v.as_str().map(str::to_string)
    }

    pub async fn click(&self, element: &str) {
        self.command(Method::POST, &format!("/element/{element}/click"), None)
            .await;
    }

    /// Types `text` into a field.
    pub async fn send_keys(&self, element: &str, text: &str) {
        self.command(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The `textContent` of the first element matching `css`, or `None` if none does: unlike
    /// [`Browser::text`], it reads SVG text and elements laid out with `display: contents`.
    pub async fn text_content(&self, css: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null",
            json!(css)
        );
        self.execute(&script).await.as_str().map(str::to_string)
    }

    /// Waits until `ready` holds for [`Browser::text_content`] of `css`, and returns it.
    pub async fn wait_for_content(&self, css: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = self.text_content(css).await;
            if let Some(t) = &last
                && ready(t)
            {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{css} never held what was expected; last content: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.find_all(css).await.len()
    }

    /// Makes the page `width` by `height` CSS pixels, as a device of that size shows it (through
    /// Chromium's device emulation: a window cannot be made as narrow as a phone), and returns
    /// the page's width as it reports it.
    pub async fn set_page_width(&self, width: u64, height: u64) -> u64 {
        let metrics = json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600
        }});
        self.command(Method::POST, "/goog/cdp/execute", Some(metrics))
            .await;
        self.execute("return window.innerWidth")
            .await
            .as_u64()
            .unwrap()
    }

    /// Saves what the window shows as a PNG.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.command(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Browser {
    /// Ends the session, which closes Chromium.
    pub async fn quit(mut self) {
        let url = std::mem::take(&mut self.session);
        let _ = self.http.try_send(Method::DELETE, &url, None, None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The full path of a program on `PATH`.
fn which(program: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
        .display()
        .to_string()
}
