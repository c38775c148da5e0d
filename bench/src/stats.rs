//! Latency histograms (hdrhistogram, microseconds) shared by many client tasks.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Highest latency tracked, in microseconds (values above are clamped).
const MAX_US: u64 = 600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Quantiles kept in each result line for plotting latency distributions.
pub const DIST_QUANTILES: [f64; 14] = [
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// `{count, mean_us, p50_us, p90_us, p99_us, p999_us, max_us, dist: [[q, us], …]}`.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let dist: Vec<Value> = DIST_QUANTILES
        .iter()
        .map(|q| json!([q, h.value_at_quantile(*q)]))
        .collect();
    json!({
        "count": h.len(),
        "mean_us": h.mean().round(),
        "p50_us": h.value_at_quantile(0.5),
        "p90_us": h.value_at_quantile(0.9),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "dist": dist,
    })
}

/// One shard: a histogram and counters, behind an uncontended-in-practice mutex.
pub struct Shard {
    pub hist: Histogram<u64>,
    /// Events counted in the current window (e.g. messages received).
    pub count: u64,
    /// Events outside the window (e.g. late messages of an earlier step).
    pub stale: u64,
    /// Latest event time, µs since `clock::START`.
    pub last_us: u64,
}

/// Histograms sharded by client index, so that thousands of tasks record without
/// one histogram each (~100 KiB apiece) and without fighting over one lock.
pub struct Shards {
    shards: Vec<Mutex<Shard>>,
}

impl Shards {
    pub fn new(n: usize) -> Shards {
        let shards = (0..n.max(1))
            .map(|_| {
                Mutex::new(Shard {
                    hist: new_hist(),
                    count: 0,
                    stale: 0,
                    last_us: 0,
                })
            })
            .collect();
        Shards { shards }
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        let m = &self.shards[i % self.shards.len()];
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one latency sample (µs) at time `now_us`.
    pub fn record(&self, i: usize, latency_us: u64, now_us: u64) {
        let mut s = self.shard(i);
        s.hist.saturating_record(latency_us.clamp(1, MAX_US));
        s.count += 1;
        s.last_us = s.last_us.max(now_us);
    }

    pub fn stale(&self, i: usize) {
        self.shard(i).stale += 1;
    }

    /// Events counted so far (cheap enough to poll a few times a second).
    pub fn count(&self) -> u64 {
        (0..self.shards.len()).map(|i| self.shard(i).count).sum()
    }

    /// Merges and resets every shard: (histogram, count, stale, last_us).
    pub fn take(&self) -> (Histogram<u64>, u64, u64, u64) {
        let mut all = new_hist();
        let (mut count, mut stale, mut last) = (0, 0, 0);
        for i in 0..self.shards.len() {
            let mut s = self.shard(i);
            let _ = all.add(&s.hist);
            s.hist.reset();
            count += s.count;
            stale += s.stale;
            last = last.max(s.last_us);
            s.count = 0;
            s.stale = 0;
            s.last_us = 0;
        }
        (all, count, stale, last)
    }
}

/// A process-wide monotonic clock in microseconds; broadcast messages carry it in `t`.
pub mod clock {
    use super::*;

    static START: OnceLock<Instant> = OnceLock::new();

    pub fn init() {
        START.get_or_init(Instant::now);
    }

    pub fn now_us() -> u64 {
        START.get_or_init(Instant::now).elapsed().as_micros() as u64
    }
}

/// A counter of errors by short reason, for result lines.
#[derive(Default)]
pub struct Errors {
    total: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    pub fn add(&self, e: &anyhow::Error) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(format!("{e:#}"));
        }
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn first(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Median of a list (mean of the two middle values for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_and_reset() {
        let s = Shards::new(4);
        for i in 0..100u64 {
            s.record(i as usize, i + 1, i);
        }
        s.stale(3);
        assert_eq!(s.count(), 100);
        let (h, count, stale, last) = s.take();
        assert_eq!((h.len(), count, stale, last), (100, 100, 1, 99));
        assert_eq!(s.count(), 0);
        let sum = summary(&h);
        assert_eq!(sum["p50_us"].as_u64(), Some(50));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
