//! The `choreo` binary's surface under abuse: thousands of half-sent requests against the API,
//! hostile keys on the terminal, and the demo's secrets on disk.

use crate::helpers::ok;
use choreo::demo;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn choreo(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choreo"));
    cmd.arg("--data-dir")
        .arg(dir)
        .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
        .env("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    cmd
}

/// A `/proc/<pid>/...` figure: open descriptors, or the resident set in MB.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// (soft, hard) limits on open files of a process.
fn fd_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_string(), words[4].to_string())
}

/// A plain request on a fresh connection, as a dashboard would make it; its status line.
fn health(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(60))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: choreo\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or_default().to_string())
}

struct Up {
    child: Child,
    log: std::path::PathBuf,
}

impl Up {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 3,000 connections that each send half a request and wait, against an `up` whose server takes
/// 64 connections at once: the server's descriptors and memory stay bounded, a normal request is
/// still answered, the input scanner still works, and the process's soft descriptor limit (set
/// low here, as many systems do) was raised to the hard one at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_cannot_exhaust_the_server() {
    const CAP: usize = 64;
    const FLOOD: usize = 3000;
    choreo_runtime::limits::raise_fd_limit(); // this test's own 3,000 sockets
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let log = dir.path().join("up.log");
    // The folder the flood-time file lands in exists from the start, so the notifier watches it
    // (a file in a folder created a moment before may wait for the 30 s safety scans).
    let input = dir.path().join("buckets/choreo-input/daily");
    std::fs::create_dir_all(&input).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 1024 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_choreo"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("up")
        .env("CHOREO_RUNTIME__SCAN_INTERVAL_MS", "50")
        .env("CHOREO_OPERATIONS__LISTEN", "127.0.0.1:0")
        .env("CHOREO_OPERATIONS__MAX_CONNECTIONS", CAP.to_string())
        .env("CHOREO_OPERATIONS__HEADER_READ_TIMEOUT_SECS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let up = Up {
        child: cmd.spawn().unwrap(),
        log,
    };
    let pid = up.child.id();
    let addr_file = choreo_auditor::server::addr_file(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no server: {}", up.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (soft, hard) = fd_limits(pid);
    assert_eq!(soft, hard, "the soft limit was raised to the hard one");
    assert_eq!(health(addr).unwrap(), "HTTP/1.1 200 OK");
    let (fds_before, rss_before) = (open_fds(pid), rss_mb(pid));

    // The flood: each connection sends the start of a request and never the end of its headers.
    // All at once; an attempt the kernel leaves unanswered (the accept queue is full) gives up.
    let attempts: Vec<_> = (0..FLOOD)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                .ok()?
                .ok()?;
                s.write_all(b"GET /api/datasets HTTP/1.1\r\nHost: choreo\r\nX-Slow: ")
                    .await
                    .ok()?;
                Some(s)
            })
        })
        .collect();
    let mut held = Vec::new();
    for a in attempts {
        held.extend(a.await.unwrap());
    }
    let connected = held.len();
    let (fds_flood, rss_flood) = (open_fds(pid), rss_mb(pid));

    // Meanwhile a file lands in the input bucket, and someone opens the dashboard.
    std::fs::write(
        input.join("during-flood.csv"),
        "order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-22,Ada,a@example.com,1.00,EUR,1\n",
    )
    .unwrap();
    let started = Instant::now();
    let answer = health(addr);
    let waited = started.elapsed();
    let fds_after = open_fds(pid);
    eprintln!(
        "{connected} of {FLOOD} half-sent connections held; server fds {fds_before} -> {fds_flood} \
         (after the health check {fds_after}), RSS {rss_before} -> {rss_flood} MB; a normal \
         request answered after {waited:?}"
    );
    assert_eq!(answer.unwrap(), "HTTP/1.1 200 OK", "{}", up.log());
    assert!(connected > CAP, "the flood exceeded the cap: {connected}");
    for fds in [fds_flood, fds_after] {
        assert!(
            fds <= fds_before + CAP + 16,
            "descriptors are bounded by the cap: {fds_before} -> {fds}"
        );
    }
    assert!(
        rss_flood < rss_before + 64,
        "memory is bounded by the cap: {rss_before} -> {rss_flood} MB"
    );

    // The scanner still notices files: the one written during the flood gets through.
    let written = Instant::now();
    let deadline = written + Duration::from_secs(120);
    loop {
        let list = ok(choreo(dir.path())
            .args(["files", "list", "--json"])
            .output()
            .unwrap());
        let records: serde_json::Value = serde_json::from_str(&list).unwrap();
        let done = records.as_array().unwrap().iter().any(|r| {
            r["key"] == "daily/during-flood.csv"
                && matches!(
                    r["state"].as_str(),
                    Some("INGESTED" | "QUARANTINED" | "FAILED")
                )
        });
        if done {
            eprintln!(
                "the file written during the flood was done after {:?}",
                written.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the file written during the flood never got through; `up` logged:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    let log = up.log();
    assert!(
        !log.contains("scanning the input bucket failed") && !log.contains("Too many open files"),
        "{log}"
    );
}

/// Keys an uploader chose. Control characters (escape sequences, newlines) are refused at `put`
/// (`key::check`), and the refusal shows them escaped; what the pipeline takes may still hold a
/// right-to-left override, isolates and invisible characters, which `put`, `files list` and
/// `files show` print escaped, never raw.
#[test]
fn hostile_keys_are_escaped_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let file = dir.path().join("x.csv");
    std::fs::write(&file, "a\n1\n").unwrap();
    let refused = choreo(dir.path())
        .args(["put", "--key", "\u{1b}]0;pwned\u{7}\u{1b}[2J\nforged.csv"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains(['\u{1b}', '\u{7}']), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");

    let key = "evil\u{202e}vsc.exe \u{2066}x\u{2069}\u{200b}.csv";
    let put = ok(choreo(dir.path())
        .args(["put", "--key", key])
        .arg(&file)
        .output()
        .unwrap());
    // It matches no dataset: registered, rejected and quarantined, then `up` exits.
    ok(choreo(dir.path())
        .args(["up", "--exit-when-idle"])
        .output()
        .unwrap());
    let list = ok(choreo(dir.path()).args(["files", "list"]).output().unwrap());
    let json = ok(choreo(dir.path())
        .args(["files", "list", "--json"])
        .output()
        .unwrap());
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(records[0]["key"], key, "the record keeps the key as it is");
    let id = records[0]["id"].as_str().unwrap();
    let show = ok(choreo(dir.path())
        .args(["files", "show", id])
        .output()
        .unwrap());
    let escaped = "evil\\u{202e}vsc.exe \\u{2066}x\\u{2069}\\u{200b}.csv";
    for (what, out) in [("put", &put), ("files list", &list), ("files show", &show)] {
        assert!(
            !out.contains(['\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}']),
            "{what} printed raw bidi or invisible characters: {out:?}"
        );
        assert!(out.contains(escaped), "{what}: {out:?}");
    }
}

/// The demo's configuration holds the API token and the mask salt: only its owner may read it.
#[cfg(unix)]
#[test]
fn the_demo_configuration_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(demo::CONFIG_FILE);
    // One written by an older version, readable by all, is tightened when written again.
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let written = demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let mode = std::fs::metadata(&written).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(
        std::fs::read_to_string(&written)
            .unwrap()
            .contains("api_token")
    );
    // And as `up --demo` writes it, through a partial file renamed once the samples are in.
    let fresh = tempfile::tempdir().unwrap();
    let up = Up {
        child: choreo(fresh.path())
            .args(["up", "--demo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        log: fresh.path().join("none"),
    };
    let config = fresh.path().join(demo::CONFIG_FILE);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !config.exists() {
        assert!(
            Instant::now() < deadline,
            "`up --demo` wrote no configuration"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    drop(up);
}
