//! The open-file limit: raised to its maximum at startup, as Go programs do, and turned
//! into the default connection limit, so that a flood of connections is answered 503
//! before the process runs out of descriptors for its own needs.

/// Descriptors kept for everything that is not a client connection: the listener, the
/// runtime, Redis and gRPC connections, log and config files, and the accept loop's
/// spare. At least 64, a tenth of the limit when that is more, at most 1024.
pub fn reserve(nofile: u64) -> u64 {
    (nofile / 10).clamp(64, 1024)
}

/// The connection limit for an open-file limit: what is left after the reserve (at
/// least 1).
pub fn max_connections_for(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(reserve(nofile)).max(1)).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one and returns the soft limit in force
/// (`None`: unknown or unlimited).
#[cfg(unix)]
pub fn raise_nofile() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one (the kernel caps it): left as is.
    if lim.maximum.is_some() && lim.maximum > lim.current {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => lim = raised,
            Err(e) => tracing::debug!(error = %e, "cannot raise the open-file limit"),
        }
    }
    lim.current
}

#[cfg(not(unix))]
pub fn raise_nofile() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_leaves_a_reserve() {
        assert_eq!(max_connections_for(256), 192);
        assert_eq!(max_connections_for(1024), 922);
        assert_eq!(max_connections_for(65_536), 64_512);
        assert_eq!(max_connections_for(10), 1);
    }
}
