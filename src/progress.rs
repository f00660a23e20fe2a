//! Progress where the command line waits: bars on standard error for people at a terminal, plain
//! lines for `up` when its standard error is a file, and nothing with `--quiet`.
//!
//! Progress never goes to standard output: scripts and tests read that, and a bar there would be
//! in their way. A bar is drawn only when standard output is a terminal too, so that output piped
//! to a program is not interleaved with a bar meant for nobody.

use crate::app::{Pipeline, Summary};
use choreo_domain::FileState;
use choreo_domain::config::BackendKind;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `--quiet`, set once when the command line is parsed: every bar and progress line obeys it.
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether a bar would reach a person: not `--quiet`, and both outputs are terminals.
fn attended() -> bool {
    !quiet() && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A bar of `len` steps on standard error, hidden unless [`attended`].
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    styled(
        len,
        what,
        "{prefix} [{bar:40}] {pos}/{len} {elapsed_precise}",
    )
}

/// A bar of `len` bytes, with a message (such as files done), hidden unless [`attended`].
pub fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    styled(
        len,
        what,
        "{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
}

fn styled(len: u64, what: &str, template: &str) -> ProgressBar {
    if !attended() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// How `up --exit-when-idle` reports files reaching terminal states: a bar redrawn every
/// [`BAR_EVERY`] when [`attended`], or else a line every [`LINE_EVERY`] (a log file, CI), only
/// when something changed. On AWS the counts are read every [`AWS_EVERY`] whichever it is: they
/// are a Scan of the state table.
pub const BAR_EVERY: Duration = Duration::from_secs(1);
pub const LINE_EVERY: Duration = Duration::from_secs(10);
pub const AWS_EVERY: Duration = Duration::from_secs(15);

/// Files in terminal states, and all files, from a summary.
pub fn terminal_counts(summary: &Summary) -> (u64, u64, [u64; 3]) {
    let mut by = [0u64; 3];
    let mut total = 0;
    for (_, state, n) in summary {
        total += n;
        match state {
            FileState::Ingested => by[0] += n,
            FileState::Quarantined => by[1] += n,
            FileState::Failed => by[2] += n,
            _ => {}
        }
    }
    (by.iter().sum(), total, by)
}

/// One progress line: `progress: 12/40 files done (ingested 10, quarantined 2, failed 0)`.
pub fn line(summary: &Summary) -> String {
    let (done, total, [ingested, quarantined, failed]) = terminal_counts(summary);
    format!(
        "progress: {done}/{total} files done (ingested {ingested}, quarantined {quarantined}, failed {failed})"
    )
}

/// Reports files moving to terminal states until `stop` fires, reading the state counts through
/// the pipeline's monitor connection (the services' API calls stay countable on AWS). Silent with
/// `--quiet`.
pub async fn watch_up(pipeline: Pipeline, stop: CancellationToken) {
    if quiet() {
        return;
    }
    let bar = attended().then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "files [{bar:40}] {pos}/{len} done {msg} {elapsed_precise}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let every = if pipeline.settings.config.backend == BackendKind::Aws {
        AWS_EVERY
    } else if bar.is_some() {
        BAR_EVERY
    } else {
        LINE_EVERY
    };
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        // A failed read skips a tick: progress is for people, the pipeline does not depend on it.
        let Ok(summary) = pipeline.summary().await else {
            continue;
        };
        match &bar {
            Some(bar) => {
                let (done, total, [i, q, f]) = terminal_counts(&summary);
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("(ingested {i}, quarantined {q}, failed {f})"));
            }
            None => {
                let now = line(&summary);
                if now != last {
                    eprintln!("{now}");
                    last = now;
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_counts_terminal_files_among_all() {
        let summary = vec![
            ("a".to_string(), FileState::Ingested, 10),
            ("b".to_string(), FileState::Ingested, 2),
            ("a".to_string(), FileState::Quarantined, 3),
            ("a".to_string(), FileState::Valid, 5),
        ];
        assert_eq!(
            line(&summary),
            "progress: 15/20 files done (ingested 12, quarantined 3, failed 0)"
        );
    }
}
