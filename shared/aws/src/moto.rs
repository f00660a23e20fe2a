//! A `moto` server for tests: the real SDKs against an AWS emulator over HTTP on loopback.
//!
//! `scripts/test` installs `moto[server]` into the workspace's `.venv`. A test that needs moto and
//! cannot start it fails with a message saying so; it never skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server` on a free loopback port, stopped when dropped.
pub struct Moto {
    child: Child,
    port: u16,
    pub endpoint: String,
}

/// Where `moto_server` is: `CHOREO_MOTO_SERVER`, else the workspace's `.venv`, else `PATH`.
fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("CHOREO_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/moto_server"
    ));
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

impl Moto {
    /// Starts a fresh moto. Panics, naming the fix, if it cannot.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let server = moto_server();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto ({}): {e}. The AWS tests need it: run scripts/test, which \
                     installs moto[server] into .venv, or set CHOREO_MOTO_SERVER",
                    server.display()
                )
            });
        let mut moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/moto-api/", "").is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited at start ({status}); is moto[server] installed in .venv?");
            }
            assert!(Instant::now() < deadline, "moto did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Makes moto's Glue crawls or job runs take `seconds` (model `glue::crawl` or `glue::job_run`),
    /// through its state manager. Without it a moto crawl never finishes.
    pub fn set_transition_seconds(&self, model: &str, seconds: u64) {
        let status = set_transition(&self.host(), model, seconds).expect("moto answers");
        assert!(
            status < 300,
            "moto refused the transition for {model}: {status}"
        );
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
        request(&self.host(), method, path, body)
    }
}

/// If `endpoint` is a moto server, makes its Glue crawls and job runs take `seconds` (as real ones
/// take time; a moto crawl never finishes otherwise) and returns true. Any other endpoint: false.
pub fn configure(endpoint: &str, seconds: u64) -> bool {
    let Some(host) = endpoint
        .strip_prefix("http://")
        .map(|h| h.trim_end_matches('/'))
    else {
        return false;
    };
    if request(host, "GET", "/moto-api/", "").ok() != Some(200) {
        return false;
    }
    ["glue::crawl", "glue::job_run"]
        .iter()
        .all(|m| set_transition(host, m, seconds).is_ok_and(|s| s < 300))
}

fn set_transition(host: &str, model: &str, seconds: u64) -> std::io::Result<u16> {
    let body = serde_json::json!({
        "model_name": model,
        "transition": {"progression": "time", "seconds": seconds},
    })
    .to_string();
    request(
        host,
        "POST",
        "/moto-api/state-manager/set-transition",
        &body,
    )
}

/// A minimal HTTP/1.1 request to moto's own API (not an AWS API); returns the status code.
fn request(host: &str, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
