//! SVG plots (plotters, SVG backend only: no system font dependencies).

use crate::stats::median;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

fn color(target: &str) -> RGBColor {
    match target {
        "skein" => RGBColor(0xd6, 0x27, 0x28),
        "node" => RGBColor(0x2c, 0xa0, 0x2c),
        "socketioxide" => RGBColor(0x1f, 0x77, 0xb4),
        "raw" => RGBColor(0x20, 0x20, 0x20),
        "skein-nats" => RGBColor(0xff, 0x7f, 0x0e),
        "skein-mesh" => RGBColor(0x94, 0x67, 0xbd),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// The legend's name of a target.
fn shown(target: &str) -> String {
    if target == "raw" {
        "ceiling (raw)".into()
    } else {
        target.to_string()
    }
}

/// Panels per row of a figure with `n` panels.
const COLS: usize = 3;

fn grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, COLS);
    (n.div_ceil(cols), cols)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

fn targets(doc: &Value) -> Vec<String> {
    doc["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect()
}

/// The ok run of (case, target) whose value at `key` is the median one.
fn median_run<'a>(
    doc: &'a Value,
    case: &str,
    target: &str,
    key: impl Fn(&Value) -> Option<f64>,
) -> Option<&'a Value> {
    let mut runs: Vec<(&Value, f64)> = doc["runs"]
        .as_array()?
        .iter()
        .filter(|r| {
            r["case"].as_str() == Some(case)
                && r["target"].as_str() == Some(target)
                && r["ok"] == Value::Bool(true)
        })
        .filter_map(|r| key(&r["result"]).map(|k| (&r["result"], k)))
        .collect();
    let mid = median(runs.iter().map(|(_, k)| *k).collect())?;
    runs.sort_by(|a, b| (a.1 - mid).abs().total_cmp(&(b.1 - mid).abs()));
    runs.first().map(|(r, _)| *r)
}

fn cases_where(doc: &Value, pred: impl Fn(&[String]) -> bool) -> Vec<(String, String)> {
    doc["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let args: Vec<String> = c["args"]
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            pred(&args).then(|| {
                (
                    c["name"].as_str().unwrap_or("?").to_string(),
                    args.join(" "),
                )
            })
        })
        .collect()
}

/// A panel title: the case name and its arguments, cut to fit.
fn title(case: &str, args: &str) -> String {
    let t = format!("{case}: {args}");
    if t.chars().count() > 60 {
        t.chars().take(57).collect::<String>() + "..."
    } else {
        t
    }
}

/// Quantile q → -log10(1 - q): 50% → 0.3, 99% → 2, 99.9% → 3; the max at 5.
fn q_x(q: f64) -> f64 {
    if q >= 1.0 {
        5.0
    } else {
        (-(1.0 - q).log10()).min(5.0)
    }
}

fn pct_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    if x >= 5.0 {
        "max".into()
    } else {
        let p = q * 100.0;
        let s = format!("{p:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}%")
    }
}

fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = lo.max(1e-3);
    let hi = hi.max(lo * 10.0);
    (lo / 1.5, hi * 1.5)
}

/// Latency percentile curves of echo and fixed-rate broadcast cases.
pub fn latency_svg(doc: &Value, path: &Path) -> Result<bool> {
    let cases = cases_where(doc, |a| {
        (a[0] == "echo" || a[0].ends_with("broadcast")) && !a.iter().any(|x| x == "--search")
    });
    let ts = targets(doc);
    let mut panels = Vec::new();
    for (case, args) in &cases {
        let mut series = Vec::new();
        for t in &ts {
            let run = median_run(doc, case, t, |r| r["latency"]["p99_us"].as_f64());
            let Some(dist) = run.and_then(|r| r["latency"]["dist"].as_array()) else {
                continue;
            };
            let pts: Vec<(f64, f64)> = dist
                .iter()
                .filter_map(|p| Some((q_x(p[0].as_f64()?), (p[1].as_f64()? / 1000.0).max(1e-3))))
                .collect();
            series.push((t.clone(), pts));
        }
        if !series.is_empty() {
            panels.push((title(case, args), series));
        }
    }
    if panels.is_empty() {
        return Ok(false);
    }
    let (rows, cols) = grid(panels.len());
    let root = SVGBackend::new(path, (560 * cols as u32, 440 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    for (area, (title, series)) in areas.iter().zip(&panels) {
        let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
        let (lo, hi) = ys.fold((f64::MAX, 0f64), |(l, h), y| (l.min(y), h.max(y)));
        let (lo, hi) = log_range(lo, hi);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..5f64, (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(6)
            .x_label_formatter(&|x| pct_label(*x))
            .y_label_formatter(&|y| crate::report::fmt_num(*y))
            .draw()
            .map_err(err)?;
        for (t, pts) in series {
            let c = color(t);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(shown(t))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}

/// Latency against rate, from the steps of the broadcast searches: delivered msg/s
/// (top) and p50 (dashed) and p99 (solid) latency (bottom) against the offered rate.
pub fn throughput_svg(doc: &Value, path: &Path) -> Result<bool> {
    let cases = cases_where(doc, |a| a.iter().any(|x| x == "--search"));
    let ts = targets(doc);
    // (case title, [(target, [(rate, delivered/s, p99 ms, p50 ms)])])
    let mut panels = Vec::new();
    for (case, args) in &cases {
        let mut series = Vec::new();
        for t in &ts {
            let Some(run) = median_run(doc, case, t, |r| r["max_rate"].as_f64()) else {
                continue;
            };
            let mut pts: Vec<(f64, f64, f64, f64)> = run["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["superseded"].as_bool() != Some(true))
                .filter_map(|s| {
                    let p99 = s["latency"]["p99_us"].as_f64().unwrap_or(f64::NAN) / 1000.0;
                    let p50 = s["latency"]["p50_us"].as_f64().unwrap_or(f64::NAN) / 1000.0;
                    Some((
                        s["rate"].as_f64()?,
                        s["delivered_per_s"].as_f64()?,
                        p99,
                        p50,
                    ))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !pts.is_empty() {
                series.push((t.clone(), pts));
            }
        }
        if !series.is_empty() {
            panels.push((title(case, args), series));
        }
    }
    if panels.is_empty() {
        return Ok(false);
    }
    // Each panel is two charts, one above the other.
    let (rows, ncols) = grid(panels.len());
    let root = SVGBackend::new(path, (560 * ncols as u32, 820 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let cells = root.split_evenly((2 * rows, ncols));
    for (i, (title, series)) in panels.iter().enumerate() {
        let (prow, pcol) = (i / ncols, i % ncols);
        let all = series.iter().flat_map(|(_, p)| p.iter());
        let (rlo, rhi) = all
            .clone()
            .fold((f64::MAX, 0f64), |(l, h), p| (l.min(p.0), h.max(p.0)));
        let (dlo, dhi) = all
            .clone()
            .fold((f64::MAX, 0f64), |(l, h), p| (l.min(p.1), h.max(p.1)));
        let (plo, phi) = all
            .flat_map(|p| [p.2, p.3])
            .filter(|y| y.is_finite())
            .fold((f64::MAX, 0f64), |(l, h), y| (l.min(y), h.max(y)));
        let (rlo, rhi) = log_range(rlo, rhi);
        let (dlo, dhi) = log_range(dlo.max(1.0), dhi);
        let (plo, phi) = log_range(plo.min(50.0), phi.max(50.0));
        // Top: delivered msg/s; bottom: p50 and p99 with the 50 ms target.
        for (row, (ylo, yhi, ydesc)) in [
            (dlo, dhi, "delivered msg/s"),
            (plo, phi, "latency p50 - - / p99 — (ms)"),
        ]
        .into_iter()
        .enumerate()
        {
            let area = &cells[(2 * prow + row) * ncols + pcol];
            let caption = if row == 0 {
                title.clone()
            } else {
                String::new()
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d((rlo..rhi).log_scale(), (ylo..yhi).log_scale())
                .map_err(err)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_desc("offered publish rate (msg/s)")
                .y_desc(ydesc)
                .x_label_formatter(&|x| crate::report::fmt_num(*x))
                .y_label_formatter(&|y| crate::report::fmt_num(*y))
                .draw()
                .map_err(err)?;
            if row == 1 {
                chart
                    .draw_series(LineSeries::new([(rlo, 50.0), (rhi, 50.0)], BLACK.mix(0.5)))
                    .map_err(err)?
                    .label("50 ms")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
            }
            for (t, pts) in series {
                let c = color(t);
                let xy: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|p| (p.0, if row == 0 { p.1.max(1.0) } else { p.2 }))
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(xy.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(shown(t))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(xy.iter().map(|p| Circle::new(*p, 3, c.filled())))
                    .map_err(err)?;
                if row == 1 {
                    let p50: Vec<(f64, f64)> = pts
                        .iter()
                        .map(|p| (p.0, p.3))
                        .filter(|p| p.1.is_finite())
                        .collect();
                    chart
                        .draw_series(DashedLineSeries::new(p50, 6, 4, c.stroke_width(1)))
                        .map_err(err)?;
                }
            }
            chart
                .configure_series_labels()
                .position(if row == 0 {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperLeft
                })
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(true)
}

/// Server RSS over time in the churn cases: one line per server (its median run by
/// cycles/s), the end of the churn marked.
pub fn churn_rss_svg(doc: &Value, path: &Path) -> Result<bool> {
    let cases = cases_where(doc, |a| a[0] == "churn");
    let ts = targets(doc);
    // (title, churn end s, [(target, [(s, MiB)])])
    let mut panels = Vec::new();
    for (case, args) in &cases {
        let mut series = Vec::new();
        let mut end: f64 = 0.0;
        for t in &ts {
            let Some(run) = median_run(doc, case, t, |r| r["cycles_per_s"].as_f64()) else {
                continue;
            };
            let pts: Vec<(f64, f64)> = run["rss_curve"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? / 1024.0)))
                .collect();
            if pts.len() >= 2 {
                end = end.max(run["churn_end_s"].as_f64().unwrap_or(0.0));
                series.push((t.clone(), pts));
            }
        }
        if !series.is_empty() {
            panels.push((title(case, args), end, series));
        }
    }
    if panels.is_empty() {
        return Ok(false);
    }
    let (rows, cols) = grid(panels.len());
    let root = SVGBackend::new(path, (560 * cols as u32, 440 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    for (area, (title, end, series)) in areas.iter().zip(&panels) {
        let all = series.iter().flat_map(|(_, p)| p.iter());
        let xmax = all.clone().fold(1f64, |m, p| m.max(p.0));
        let ymax = all.fold(1f64, |m, p| m.max(p.1));
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax * 1.02, 0f64..ymax * 1.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("time since the churn started (s)")
            .y_desc("server RSS (MiB)")
            .x_label_formatter(&|x| crate::report::fmt_num(*x))
            .y_label_formatter(&|y| crate::report::fmt_num(*y))
            .draw()
            .map_err(err)?;
        if *end > 0.0 {
            chart
                .draw_series(DashedLineSeries::new(
                    [(*end, 0.0), (*end, ymax * 1.1)],
                    6,
                    4,
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(err)?
                .label("churn ends")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
        }
        for (t, pts) in series {
            let c = color(t);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(shown(t))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn draws_from_a_small_document() {
        let dist = json!([
            [0.0, 100],
            [0.5, 900],
            [0.99, 4000],
            [0.999, 9000],
            [1.0, 12000]
        ]);
        let steps = json!([
            {"rate": 25.0, "delivered_per_s": 25000.0, "latency": {"p99_us": 4000}},
            {"rate": 50.0, "delivered_per_s": 49000.0, "latency": {"p99_us": 80000}}
        ]);
        let doc = json!({
            "targets": [{"name": "skein"}, {"name": "node"}, {"name": "raw"}],
            "cases": [
                {"name": "echo-1k", "args": ["echo", "-c", "1000"]},
                {"name": "search-1k", "args": ["broadcast", "--search"]},
                {"name": "churn", "args": ["churn", "-d", "2"]}
            ],
            "runs": [
                {"case": "echo-1k", "target": "skein", "ok": true, "result": {"latency": {"p99_us": 4000, "dist": dist}}},
                {"case": "echo-1k", "target": "node", "ok": true, "result": {"latency": {"p99_us": 8000, "dist": dist}}},
                {"case": "search-1k", "target": "node", "ok": true, "result": {"max_rate": 25.0, "steps": steps}},
                {"case": "search-1k", "target": "raw", "ok": true, "result": {"max_rate": 50.0, "steps": steps}},
                {"case": "churn", "target": "skein", "ok": true, "result": {"cycles_per_s": 10.0, "churn_end_s": 2.0,
                    "rss_curve": [[0.0, 5000], [1.0, 6000], [2.0, 6100], [3.0, 5200]]}}
            ]
        });
        let dir = std::env::temp_dir().join(format!("skein-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(latency_svg(&doc, &dir.join("l.svg")).unwrap());
        assert!(throughput_svg(&doc, &dir.join("t.svg")).unwrap());
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("node") && svg.contains("ceiling (raw)"));
        assert!(churn_rss_svg(&doc, &dir.join("c.svg")).unwrap());
        assert!(std::fs::read_to_string(dir.join("c.svg"))
            .unwrap()
            .contains("churn ends"));
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(pct_label(2.0), "99%");
        assert_eq!(pct_label(3.0), "99.9%");
    }
}
