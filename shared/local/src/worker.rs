//! Local jobs in child processes with a memory limit, so that a job that runs out of memory fails
//! its batch, not the process running the pipeline's six stages.
//!
//! The job runner starts the built-in transform as `<program> job-worker` ([`WORKER_COMMAND`]):
//! by default the running program itself — `choreo`, or a service binary, both of which answer
//! `job-worker` — or `[local] job_worker` when set (a harness that embeds the pipeline in another
//! program names a `choreo` binary there). The child reads a [`WorkerRequest`] as JSON on stdin
//! (stdin, not arguments or the environment, because it carries the mask salt), runs
//! [`run_builtin`], and writes a [`WorkerAnswer`] as JSON on stdout. `command:` jobs are `sh -c`
//! children already. Both start under [`limit_memory`]; a child that dies instead of answering
//! (the limit reached, a signal) is described by [`crash_reason`].

use crate::objects::LocalObjectStore;
use crate::transform::{BuiltinJob, run_builtin};
use choreo_transform::{BuiltinSummary, KEY_INDEX_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use tokio::io::AsyncWriteExt;

/// The argument that makes a choreo program a job worker.
pub const WORKER_COMMAND: &str = "job-worker";

/// What the job runner hands a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The local backend's data directory (buckets and their `tmp/`).
    pub data_dir: PathBuf,
    /// `[local] durability = "power"`: the output is synced as every object is.
    pub sync: bool,
    pub job: BuiltinJob,
    /// The job run's arguments (`--manifest`, `--batch_id`).
    pub arguments: BTreeMap<String, String>,
    /// Bytes the deduplication index holds before it spills to disk (a benchmark's knob).
    #[serde(default = "default_key_index_bytes")]
    pub key_index_bytes: usize,
}

fn default_key_index_bytes() -> usize {
    KEY_INDEX_BYTES
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerAnswer {
    /// What the transform did, or why it failed.
    pub result: Result<BuiltinSummary, String>,
    /// The worker's peak resident memory (VmHWM), KiB.
    pub peak_rss_kib: Option<u64>,
}

/// The whole of `job-worker`: reads the request on stdin, runs the transform, writes the answer on
/// stdout. Returns the exit code: 0 when the transform succeeded, 1 when it failed, 2 when the
/// request could not be read.
pub async fn serve_worker() -> i32 {
    // The kernel's OOM killer, if it has to choose, takes the job rather than the pipeline.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let mut input = String::new();
    let request: Result<WorkerRequest, String> = std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str(&input).map_err(|e| e.to_string()));
    let (result, code) = match request {
        Err(e) => (Err(format!("job-worker: bad request on stdin: {e}")), 2),
        Ok(req) => match LocalObjectStore::new(&req.data_dir) {
            Err(e) => (Err(format!("{}: {e}", req.data_dir.display())), 1),
            Ok(objects) => {
                let objects = objects.with_sync(req.sync);
                let result =
                    run_builtin(&objects, &req.job, &req.arguments, req.key_index_bytes).await;
                let code = if result.is_ok() { 0 } else { 1 };
                (result, code)
            }
        },
    };
    let answer = WorkerAnswer {
        result,
        peak_rss_kib: peak_rss_kib(),
    };
    println!(
        "{}",
        serde_json::to_string(&answer).expect("an answer serializes")
    );
    code
}

/// Runs `request` in a worker: `program job-worker` under `memory_mib`. The worker's answer, or
/// (`Err`) why it gave none: it could not start, or it died (see [`crash_reason`]).
pub async fn run_in_worker(
    program: &Path,
    memory_mib: Option<u64>,
    request: &WorkerRequest,
) -> Result<WorkerAnswer, String> {
    let request = serde_json::to_vec(request).expect("a request serializes");
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(WORKER_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    limit_memory(&mut cmd, memory_mib.map(|m| m << 20));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start the job worker {}: {e}", program.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    // A worker that dies before reading all of it is described by its exit below.
    let _ = stdin.write_all(&request).await;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for the job worker: {e}"))?;
    match serde_json::from_slice::<WorkerAnswer>(&out.stdout) {
        Ok(answer) => Ok(answer),
        Err(_) if out.status.success() => Err(format!(
            "the job worker {} gave no answer: is it a choreo program? ([local] job_worker)",
            program.display()
        )),
        Err(_) => {
            let tail = tail(&out.stderr, STDERR_TAIL);
            Err(crash_reason(
                "the built-in transform",
                out.status,
                &tail,
                memory_mib,
            ))
        }
    }
}

/// How much of a failed job's stderr becomes the failure reason.
pub(crate) const STDERR_TAIL: usize = 500;

/// The last `n` bytes of `bytes` as text, starting on a character boundary.
pub(crate) fn tail(bytes: &[u8], n: usize) -> String {
    let start = bytes.len().saturating_sub(n);
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.trim_start_matches('\u{fffd}').trim().to_string()
}

/// This process's peak resident memory (VmHWM in `/proc/self/status`), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes `cmd`'s process start with at most `bytes` of data memory (`RLIMIT_DATA`: heap and
/// private writable mappings; code and reserved address space do not count, so the limit means
/// what it says whatever the binary's size). Past it an allocation fails: Rust aborts with
/// "memory allocation of N bytes failed", Python raises `MemoryError`.
pub fn limit_memory(cmd: &mut tokio::process::Command, bytes: Option<u64>) {
    let Some(bytes) = bytes else { return };
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it allocates nothing and makes one system call.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Why a job's process ended without success, for the run's error: its exit status or signal,
/// the memory limit when the end of its stderr (`tail`) says memory ran out, and that tail.
pub fn crash_reason(what: &str, status: ExitStatus, tail: &str, limit_mib: Option<u64>) -> String {
    const OUT_OF_MEMORY: [&str; 4] = [
        "memory allocation of",
        "MemoryError",
        "Cannot allocate memory",
        "out of memory",
    ];
    let how = match status.signal() {
        Some(9) => "was killed (SIGKILL: the system's OOM killer?)".to_string(),
        Some(6) => "aborted (SIGABRT)".to_string(),
        Some(s) => format!("was killed by signal {s}"),
        None => format!("exited with code {}", status.code().unwrap_or(-1)),
    };
    let mut reason = match limit_mib {
        Some(mib) if OUT_OF_MEMORY.iter().any(|m| tail.contains(m)) => {
            format!("{what} ran out of memory (limit {mib} MiB, [local] job_memory_mb) and {how}")
        }
        _ => format!("{what} {how}"),
    };
    if !tail.is_empty() {
        reason.push_str(": ");
        reason.push_str(tail);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_reasons_say_what_happened() {
        let aborted = ExitStatus::from_raw(6);
        assert_eq!(
            crash_reason(
                "the built-in transform",
                aborted,
                "memory allocation of 1048576 bytes failed",
                Some(64)
            ),
            "the built-in transform ran out of memory (limit 64 MiB, [local] job_memory_mb) \
             and aborted (SIGABRT): memory allocation of 1048576 bytes failed"
        );
        assert_eq!(
            crash_reason("the command", ExitStatus::from_raw(3 << 8), "", Some(64)),
            "the command exited with code 3"
        );
        assert_eq!(
            crash_reason("the command", ExitStatus::from_raw(9), "", None),
            "the command was killed (SIGKILL: the system's OOM killer?)"
        );
    }

    #[tokio::test]
    async fn a_limited_child_cannot_allocate_past_its_limit() {
        // A shell that needs 64 MiB of heap (a 32 Mi-character variable, twice): refused under 16 MiB.
        let script = "x=$(head -c 33554432 /dev/zero | tr '\\0' a); y=\"$x$x\"; echo ${#y}";
        let run = |limit: Option<u64>| {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-c", script]);
            limit_memory(&mut cmd, limit);
            async move { cmd.output().await.unwrap() }
        };
        let free = run(None).await;
        assert!(free.status.success(), "{free:?}");
        assert_eq!(String::from_utf8_lossy(&free.stdout).trim(), "67108864");
        let limited = run(Some(16 << 20)).await;
        assert!(!limited.status.success(), "{limited:?}");
    }
}
