//! The process limits every binary sets at start.

/// Raises this process's soft limit on open file descriptors to its hard limit, and returns the
/// limit now in force. The soft limit is often 1,024, far below the hard one: a pipeline holding a
/// database, watched directories, queues' connections and the API's clients can reach it in a
/// burst, and then every part of the process fails to open anything. The API server bounds its
/// own share (`operations.max_connections`); this leaves the rest room. A failure is logged and
/// the process runs on with the limit it has.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            choreo_telemetry::events::emit(crate::events::FdLimitRaised { limit });
            Some(limit)
        }
        Err(error) => {
            choreo_telemetry::events::emit(crate::events::FdLimitRaiseError { error: &error });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(unix)]
    fn the_soft_limit_becomes_the_hard_limit() {
        // Lowered first, as many systems start a process (nextest runs each test in its own).
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard.min(256), hard).unwrap();
        let now = super::raise_fd_limit().unwrap();
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!((now, soft), (hard, hard));
    }
}
