//! PNG plots of a run: latency over time per node count, the percentile spectrum of all node counts
//! overlaid, and throughput by node count.
//!
//! Text renders on a machine without system fonts: plotters' `ab_glyph` backend with `DejaVu` Sans from the
//! `dejavu` crate, registered once (../shared/field-notes.md).

use std::path::Path;
use std::sync::Once;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::RunSummary;

/// Why a plot could not be drawn.
pub type PlotError = Box<dyn std::error::Error + Send + Sync>;

const SIZE: (u32, u32) = (1000, 600);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

fn to_err<E: std::fmt::Display>(e: E) -> PlotError {
    e.to_string().into()
}

/// p50, p99 and max latency, second by second, of one run.
pub fn latency_over_time(path: &Path, run: &RunSummary, title: &str) -> Result<(), PlotError> {
    fonts();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(to_err)?;
    let t_max = run.timeline.last().map_or(1.0, |i| i.t).max(1.0);
    let y_max = run.timeline.iter().map(|i| i.p99_ms).fold(0.0, f64::max).max(0.001) * 1.3;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(to_err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(to_err)?;
    for (i, (name, get)) in
        [("p50", (|iv: &crate::run_outcome::Interval| iv.p50_ms) as fn(&_) -> f64), ("p99", |iv| iv.p99_ms)]
            .into_iter()
            .enumerate()
    {
        let color = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                run.timeline.iter().map(|iv| (iv.t, get(iv))),
                color.stroke_width(2),
            ))
            .map_err(to_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(to_err)?;
    Ok(())
}

/// Latency by percentile, one line per node count, x on a log scale of 1/(1-p) (as `HdrHistogram` plots).
/// `spectra` holds, per run, `(label, [(latency ms, percentile in 0..1)])`.
pub fn percentile_spectrum(
    path: &Path,
    spectra: &[(String, Vec<(f64, f64)>)],
    title: &str,
) -> Result<(), PlotError> {
    fonts();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(to_err)?;
    let x = |p: f64| 1.0 / (1.0 - p.min(0.999_999));
    let x_max = spectra.iter().flat_map(|(_, s)| s.iter().map(|&(_, p)| x(p))).fold(10.0, f64::max);
    let y_max = spectra.iter().flat_map(|(_, s)| s.iter().map(|&(v, _)| v)).fold(0.001, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
        .map_err(to_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile (1/(1-p): 10 = p90, 100 = p99, 1000 = p99.9)")
        .y_desc("latency (ms)")
        .x_label_formatter(&|v| percent_label(100.0 * (1.0 - 1.0 / v)))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(to_err)?;
    for (i, (label, points)) in spectra.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let label = label.clone();
        chart
            .draw_series(LineSeries::new(points.iter().map(|&(v, p)| (x(p), v)), color.stroke_width(2)))
            .map_err(to_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(to_err)?;
    Ok(())
}

/// Draws the series legend, framed, at `position`.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), PlotError>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(to_err)
}

/// `99.9%`, not `99.90000%`.
fn percent_label(p: f64) -> String {
    let s = format!("{p:.4}");
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// Throughput (bars) by node count.
pub fn throughput(path: &Path, runs: &[RunSummary], title: &str) -> Result<(), PlotError> {
    fonts();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(to_err)?;
    let y_max = runs.iter().map(|r| r.throughput).fold(1.0, f64::max) * 1.2;
    let mut chart = ops_by_nodes(&root, runs, title, y_max)?;
    // Runs of another target, or through a proxy, stand beside each other at the same node count.
    let series = series_of(runs);
    let k = series.len() as f64;
    let width = 0.6 / k / 2.0;
    let slot = |r: &RunSummary| series.iter().position(|s| *s == series_key(r)).unwrap_or(0) as f64;
    let center = |r: &RunSummary| r.nodes as f64 - 0.3 + (2.0 * slot(r) + 1.0) * width;
    for (i, key) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let drawn = chart
            .draw_series(runs.iter().filter(|r| series_key(r) == *key).map(|r| {
                let x = center(r);
                Rectangle::new([(x - width * 0.9, 0.0), (x + width * 0.9, r.throughput)], color.filled())
            }))
            .map_err(to_err)?;
        if series.len() > 1 {
            drawn
                .label(series_label(key))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
        }
    }
    chart
        .draw_series(runs.iter().map(|r| {
            Text::new(
                crate::run_outcome::group(r.throughput),
                (center(r) - width * 0.9, r.throughput * 1.03),
                ("sans-serif", if series.len() > 1 { 13 } else { 16 }),
            )
        }))
        .map_err(to_err)?;
    if series.len() > 1 {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(to_err)?;
    Ok(())
}

/// Measured throughput by node count next to the projection from CPU per operation (a core per node,
/// the client not the limit): one pair of lines per target (and per proxied series).
pub fn projection(path: &Path, runs: &[RunSummary], title: &str) -> Result<(), PlotError> {
    fonts();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(to_err)?;
    let y_max =
        runs.iter().map(|r| r.throughput.max(r.projected_throughput.unwrap_or(0.0))).fold(1.0, f64::max)
            * 1.15;
    let mut chart = ops_by_nodes(&root, runs, title, y_max)?;
    for (i, key) in series_of(runs).iter().enumerate() {
        let of: Vec<&RunSummary> = runs.iter().filter(|r| series_key(r) == *key).collect();
        let name = series_label(key);
        let measured: Vec<(f64, f64)> = of.iter().map(|r| (r.nodes as f64, r.throughput)).collect();
        let projected: Vec<(f64, f64)> =
            of.iter().filter_map(|r| r.projected_throughput.map(|p| (r.nodes as f64, p))).collect();
        let (solid, light) = (COLORS[(2 * i) % COLORS.len()], COLORS[(2 * i + 1) % COLORS.len()]);
        for (points, color, label) in [
            (measured, solid, format!("{name}: measured (shared cores)")),
            (projected, light, format!("{name}: projected (a core per node)")),
        ] {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
                .map_err(to_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
            chart
                .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 5, color.filled())))
                .map_err(to_err)?;
            chart
                .draw_series(points.iter().map(|&(x, y)| {
                    Text::new(crate::run_outcome::group(y), (x + 0.03, y * 1.02), ("sans-serif", 13))
                }))
                .map_err(to_err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(to_err)?;
    Ok(())
}

/// What sets runs apart at one node count: their target, and whether they went through a proxy.
type SeriesKey = (String, Option<String>);

fn series_key(r: &RunSummary) -> SeriesKey {
    (r.target.clone(), r.via.clone())
}

/// Every series, in the order the runs first show them.
fn series_of(runs: &[RunSummary]) -> Vec<SeriesKey> {
    let mut series = Vec::new();
    for r in runs {
        let key = series_key(r);
        if !series.contains(&key) {
            series.push(key);
        }
    }
    series
}

/// `otkv`, `redis`, `otkv through harness proxy`.
fn series_label((target, via): &SeriesKey) -> String {
    match via {
        Some(v) => format!("{target} through harness {v}"),
        None if target == "otkv" => "otkv, routed by the client".into(),
        None => target.clone(),
    }
}

/// The coordinates of the throughput plots.
type NodesByOps = Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>;

/// The axes of the throughput plots: node counts across, ops/s up to `y_max`.
fn ops_by_nodes<'a, 'b: 'a>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    runs: &[RunSummary],
    title: &str,
    y_max: f64,
) -> Result<ChartContext<'a, BitMapBackend<'b>, NodesByOps>, PlotError> {
    let max_nodes = runs.iter().map(|r| r.nodes).max().unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0.5f64..max_nodes + 0.5, 0f64..y_max)
        .map_err(to_err)?;
    chart
        .configure_mesh()
        .x_desc("nodes")
        .y_desc("ops/s")
        .x_labels(runs.len().max(2) + 1)
        .x_label_formatter(&|v| if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { String::new() })
        .y_label_formatter(&|v| crate::run_outcome::group(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(to_err)?;
    Ok(chart)
}
