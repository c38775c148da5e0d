//! Reading /proc: memory and CPU time of the server and of the generator itself.

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::time::Instant;

/// Linux USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every
/// architecture Linux userspace sees).
const CLK_TCK: f64 = 100.0;

fn proc_dir(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    }
}

/// VmRSS of a process in KiB (`None`: this process).
pub fn rss_kib(pid: Option<u32>) -> Result<u64> {
    let path = format!("{}/status", proc_dir(pid));
    let s = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Result<u64> {
    let path = format!("{}/stat", proc_dir(pid));
    let s = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &s[s.rfind(')').ok_or_else(|| anyhow!("bad {path}"))? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')' : state(3) ppid(4) ... utime(14) stime(15) → indexes 11 and 12 here.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// CPU time of a process in nanoseconds: the sum of its threads' run time from
/// /proc/<pid>/task/*/schedstat (nanosecond resolution, where utime/stime count 10 ms
/// ticks); falls back to the ticks when schedstat is not there. Threads that exited
/// in between are not counted, which is why the tick meters stay the default.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    let mut any = false;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let path = entry?.path().join("schedstat");
        if let Some(ns) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    if any {
        Ok(total)
    } else {
        Ok(cpu_ticks(Some(pid))? * (1e9 / CLK_TCK) as u64)
    }
}

/// Per-process CPU time at nanosecond resolution over a window (a cluster node's
/// share of a broadcast is a few µs: ticks of 10 ms are too coarse for it).
pub struct NsMeters {
    start: Vec<Option<u64>>,
    pids: Vec<u32>,
    at: Instant,
}

impl NsMeters {
    pub fn start(pids: &[u32]) -> NsMeters {
        NsMeters {
            start: pids.iter().map(|p| cpu_ns(*p).ok()).collect(),
            pids: pids.to_vec(),
            at: Instant::now(),
        }
    }

    /// (CPU ns spent, wall seconds) of each process since `start`.
    pub fn read(&self) -> Vec<(Option<u64>, f64)> {
        let wall = self.at.elapsed().as_secs_f64();
        self.pids
            .iter()
            .zip(&self.start)
            .map(|(p, s)| {
                let now = cpu_ns(*p).ok();
                (s.zip(now).map(|(s, n)| n.saturating_sub(s)), wall)
            })
            .collect()
    }
}

/// CPU use of one process over a window, in percent of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    ticks: u64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            ticks: cpu_ticks(pid).unwrap_or(0),
            at: Instant::now(),
        }
    }

    pub fn pct(&self) -> Option<f64> {
        let now = cpu_ticks(self.pid).ok()?;
        let wall = self.at.elapsed().as_secs_f64();
        (wall > 0.0)
            .then(|| round1((now.saturating_sub(self.ticks)) as f64 / CLK_TCK / wall * 100.0))
    }
}

/// CPU meters for the generator and for every server process known.
pub struct CpuMeters {
    gen: CpuMeter,
    servers: Vec<CpuMeter>,
}

impl CpuMeters {
    pub fn start(server_pids: &[u32]) -> CpuMeters {
        CpuMeters {
            gen: CpuMeter::start(None),
            servers: server_pids
                .iter()
                .map(|p| CpuMeter::start(Some(*p)))
                .collect(),
        }
    }

    /// `{"gen_cpu_pct": x, "server_cpu_pct": y, "server_cpu_pct_each": [..]}` (server:
    /// sum over processes; each: per process, in the order of the pids, so that a node of
    /// a cluster that holds no client shows what the others' traffic costs it).
    pub fn json(&self) -> Value {
        let each: Vec<Option<f64>> = self.servers.iter().map(CpuMeter::pct).collect();
        let servers: Vec<f64> = each.iter().flatten().copied().collect();
        let server = (!servers.is_empty()).then(|| round1(servers.iter().sum()));
        json!({ "gen_cpu_pct": self.gen.pct(), "server_cpu_pct": server, "server_cpu_pct_each": each })
    }
}

/// Sum of the VmRSS of the server processes, in KiB.
pub fn servers_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_kib(Some(*p)).ok()).sum()
}

/// The pid of the process listening on TCP `port` on this machine, found through
/// /proc/net/tcp (the socket inode) and /proc/*/fd.
pub fn find_listening_pid(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|path| {
            let s = std::fs::read_to_string(path).ok()?;
            s.lines().skip(1).find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let local_port = f.get(1)?.rsplit(':').next()?;
                let listening = f.get(3)? == &"0A";
                (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                    .then(|| f.get(9).map(|s| s.to_string()))?
            })
        })?;
    let needle = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(&needle)) {
                return Some(pid);
            }
        }
    }
    None
}

/// Raises this process's open-file soft limit as far as the hard limit allows;
/// returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    nofile_limit()
}

pub fn nofile_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

pub fn nofile_hard_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// The machine: cores, memory, CPU model, kernel.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map(|s| s.trim().to_string());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    json!({
        "cores": cores,
        "mem_gib": mem_kib.map(|k| round1(k as f64 / 1024.0 / 1024.0)),
        "cpu_model": model,
        "kernel": kernel,
        "nofile_hard_limit": nofile_hard_limit(),
    })
}

/// Today's date (UTC) as YYYY-MM-DD, from the Unix clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        assert!(rss_kib(None).unwrap() > 0);
        assert!(cpu_ns(std::process::id()).unwrap() > 0);
        cpu_ticks(None).unwrap();
        assert!(machine()["cores"].as_u64().unwrap() >= 1);
    }

    #[test]
    fn date_format() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }

    #[test]
    fn finds_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(find_listening_pid(port), Some(std::process::id()));
    }
}
