//! `report.html`: one self-contained page per run, merge or comparison, to open from disk or send.
//!
//! Everything is inline (styles, a few lines of script, the PNG plots as `data:` URIs, the latency charts
//! as SVG), and a Content-Security-Policy forbids any network request, so the page opens offline and
//! cannot leak where it was opened. Without JavaScript every table and plot is there; with it, the
//! latency-over-time charts get series toggles (their points carry native SVG tooltips either way).
//!
//! Every figure cell carries its exact value (`data-run`, `data-field`, `data-value`) beside the
//! rounded text, so a test (or a script) can check the page against `summary.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::report::RunSummary;
use crate::run_outcome::group;

/// What a page shows.
#[derive(Debug)]
pub struct Page<'a> {
    /// The heading.
    pub title: String,
    /// The settings (`summary.json`'s `config`): command, workload, machine, version.
    pub config: &'a serde_json::Value,
    /// The runs, in order.
    pub runs: &'a [RunSummary],
    /// PNG plots to inline, with their captions.
    pub plots: Vec<(String, PathBuf)>,
    /// More HTML after the first table (the comparison's rows).
    pub extra: String,
    /// Names for the runs, when theirs are not enough (a comparison's `A: 1 node`).
    pub labels: Option<Vec<String>>,
}

/// The settings every report records about how it was made: the command line, the harness's version
/// and commit, the machine, and when.
pub fn provenance() -> serde_json::Value {
    let args: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kib| format!("{:.1} GiB", kib / 1_048_576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|k| k.trim().to_string()).ok();
    serde_json::json!({
        "command": args.join(" "),
        "harness_version": env!("CARGO_PKG_VERSION"),
        "commit": env!("OTKV_COMMIT"),
        "machine": { "cores": crate::cost::cores(), "memory": memory, "kernel": kernel },
        "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:1120px;margin:0 auto;padding:16px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid #dde}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-variant-numeric:tabular-nums;background:#fff}
th,td{padding:4px 9px;border-bottom:1px solid #e4e6ea;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{background:#eef1f5}
figure{margin:12px 0;background:#fff;border:1px solid #e4e6ea;padding:8px}figcaption{color:#555;font-size:.9em}
img,svg{max-width:100%;height:auto}code,pre{font:13px ui-monospace,monospace;background:#eef1f5;padding:2px 4px}
pre{white-space:pre-wrap;word-break:break-all;padding:8px}.note{color:#555}.bad{color:#b00020;font-weight:600}
.toggles label{margin-right:1em;font-size:.9em}.toggles{display:none}.js .toggles{display:block}
@media (max-width:640px){body{font-size:14px}main{padding:8px}th,td{padding:3px 5px}}
@media print{body{background:#fff}figure{break-inside:avoid}.toggles{display:none!important}}
";

const SCRIPT: &str = "
document.documentElement.classList.add('js');
window.addEventListener('error',function(e){document.body.dataset.errors=(document.body.dataset.errors||'')+e.message+';'});
document.querySelectorAll('.toggles input').forEach(function(box){box.addEventListener('change',function(){
  document.querySelectorAll('[data-series=\"'+box.value+'\"]').forEach(function(g){g.style.display=box.checked?'':'none'});});});
window.addEventListener('load',function(){document.body.dataset.resources=performance.getEntriesByType('resource').length;
  document.body.dataset.ready='1';});
";

/// A numeric cell: the rounded text, and the exact value for checks.
fn num(run: usize, field: &str, v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => {
            let text = if decimals == 0 { group(v) } else { format!("{v:.decimals$}") };
            format!("<td data-run=\"{run}\" data-field=\"{field}\" data-value=\"{v}\">{text}</td>")
        }
        None => format!("<td data-run=\"{run}\" data-field=\"{field}\">-</td>"),
    }
}

fn comparison(out: &mut String, runs: &[RunSummary], labels: &[String]) {
    out.push_str("<h2 id=\"comparison\">Comparison</h2><div class=\"scroll\"><table id=\"runs\"><thead><tr><th>run</th><th>ops/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th><th>server CPU µs/op</th><th>client CPU µs/op</th><th>projected ops/s</th></tr></thead><tbody>");
    for (i, r) in runs.iter().enumerate() {
        let l = &r.latency_ms;
        let _ = write!(
            out,
            "<tr><td>{}</td>{}{}{}{}{}{}{}{}{}</tr>",
            esc(&labels[i]),
            num(i, "throughput", Some(r.throughput), 0),
            num(i, "p50", Some(l.p50), 3),
            num(i, "p99", Some(l.p99), 3),
            num(i, "p999", Some(l.p999), 3),
            num(i, "max", Some(l.max), 3),
            num(i, "errors_total", Some(r.errors_total as f64), 0),
            num(i, "server_cpu_us_per_op", r.server_cpu_us_per_op, 2),
            num(i, "client_cpu_us_per_op", r.client_cpu_us_per_op, 2),
            num(i, "projected_throughput", r.projected_throughput, 0),
        );
    }
    out.push_str("</tbody></table></div><p class=\"note\">Server CPU: the nodes' own CPU time in the measured window over the operations the harness counted; projected: nodes ÷ server CPU per operation (a core per node, the client not the limit), not a measurement.</p>");
}

fn per_op(out: &mut String, runs: &[RunSummary], labels: &[String]) {
    out.push_str("<h2 id=\"by-op\">Latency by operation type</h2><div class=\"scroll\"><table id=\"by_op\"><thead><tr><th>run</th><th>type</th><th>ops</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr></thead><tbody>");
    for (i, r) in runs.iter().enumerate() {
        for (kind, op) in &r.by_op {
            let l = &op.latency_ms;
            let f = |name: &str| format!("by_op.{kind}.{name}");
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td>{}{}{}{}{}</tr>",
                esc(&labels[i]),
                esc(kind),
                num(i, &f("ops"), Some(op.ops as f64), 0),
                num(i, &f("p50"), Some(l.p50), 3),
                num(i, &f("p99"), Some(l.p99), 3),
                num(i, &f("p999"), Some(l.p999), 3),
                num(i, &f("max"), Some(l.max), 3),
            );
        }
    }
    out.push_str("</tbody></table></div>");
}

fn nodes(out: &mut String, runs: &[RunSummary], labels: &[String]) {
    out.push_str("<h2 id=\"nodes\">Nodes</h2><div class=\"scroll\"><table id=\"per_node\"><thead><tr><th>run</th><th>node</th><th>address</th><th>connections</th><th>ops</th><th>share</th><th>CPU µs/op</th><th>RSS MiB</th></tr></thead><tbody>");
    for (i, r) in runs.iter().enumerate() {
        for n in &r.per_node {
            let f = |name: &str| format!("per_node.{}.{name}", n.name);
            let exited = n
                .exited
                .as_deref()
                .map(|e| format!(" <span class=\"bad\">exited: {}</span>", esc(e)))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}{exited}</td><td>{}</td>{}{}{}{}{}</tr>",
                esc(&labels[i]),
                esc(&n.name),
                esc(&n.addr),
                num(i, &f("connections"), Some(n.connections as f64), 0),
                num(i, &f("ops"), Some(n.ops as f64), 0),
                num(i, &f("share"), Some(n.share), 3),
                num(i, &f("cpu_us_per_op"), n.cpu_us_per_op, 2),
                num(i, &f("rss_mib"), n.rss_bytes.map(|b| b as f64 / 1_048_576.0), 1),
            );
        }
    }
    out.push_str("</tbody></table></div>");
}

fn errors(out: &mut String, runs: &[RunSummary], labels: &[String]) {
    out.push_str("<h2 id=\"errors\">Errors</h2><div class=\"scroll\"><table id=\"errors_by_kind\"><thead><tr><th>run</th><th>kind</th><th>count</th></tr></thead><tbody>");
    for (i, r) in runs.iter().enumerate() {
        if r.errors.is_empty() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>none</td>{}</tr>",
                esc(&labels[i]),
                num(i, "errors_total", Some(0.0), 0)
            );
        }
        for (kind, n) in &r.errors {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"bad\">{}</td>{}</tr>",
                esc(&labels[i]),
                esc(kind),
                num(i, &format!("errors.{kind}"), Some(*n as f64), 0)
            );
        }
    }
    out.push_str("</tbody></table></div>");
}

/// A chart's series: its name, its colour, and its figure of an interval.
type Series = (&'static str, &'static str, fn(&crate::run_outcome::Interval) -> f64);

/// An SVG chart of p50, p99 and max latency over time, with a tooltip on every point.
#[allow(clippy::many_single_char_names, reason = "a chart's coordinates: x, y, width, height")]
fn latency_svg(i: usize, r: &RunSummary, label: &str) -> String {
    let (w, h, pad) = (960.0, 300.0, 44.0);
    let t_max = r.timeline.last().map_or(1.0, |iv| iv.t).max(1.0);
    // The scale covers every point (the max too): a clipped series would draw a false flat line.
    let y_max = r.timeline.iter().map(|iv| iv.max_ms.max(iv.p99_ms)).fold(0.0, f64::max).max(0.001) * 1.1;
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v / y_max);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"latency over time, {}\" id=\"svg-{i}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>",
        esc(label)
    );
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#e4e6ea\"/><text x=\"4\" y=\"{ty}\" font-size=\"11\">{v:.2} ms</text>",
            w - pad,
            yy = y(v),
            ty = y(v) + 4.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{t_max:.0} s</text>",
        w - pad,
        h - 8.0
    );
    let series: [Series; 3] = [
        ("p50", "#1f77b4", |iv| iv.p50_ms),
        ("p99", "#ff7f0e", |iv| iv.p99_ms),
        ("max", "#d62728", |iv| iv.max_ms),
    ];
    for (k, (name, color, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"16\" font-size=\"12\" fill=\"{color}\" font-weight=\"bold\">{name}</text>",
            w - pad - 150.0 + 50.0 * k as f64
        );
    }
    for (name, color, f) in series {
        let points: Vec<String> =
            r.timeline.iter().map(|iv| format!("{:.1},{:.1}", x(iv.t), y(f(iv)))).collect();
        let _ = write!(
            svg,
            "<g data-series=\"{i}-{name}\"><polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        for iv in &r.timeline {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"><title>{name} {:.3} ms at {:.0} s ({} ops/s)</title></circle>",
                x(iv.t),
                y(f(iv)),
                f(iv),
                iv.t,
                group(iv.ops_per_s)
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    let mut toggles = String::new();
    for s in ["p50", "p99", "max"] {
        let _ = write!(toggles, "<label><input type=\"checkbox\" value=\"{i}-{s}\" checked> {s}</label>");
    }
    format!(
        "<figure><div class=\"toggles\">{toggles}</div>{svg}<figcaption>Latency over time, {} (p50, p99 and max of each second; hover a point for its value)</figcaption></figure>",
        esc(label)
    )
}

fn plots(out: &mut String, page: &Page<'_>, labels: &[String]) {
    out.push_str("<h2 id=\"plots\">Plots</h2>");
    for (caption, path) in &page.plots {
        let Ok(bytes) = std::fs::read(path) else { continue };
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = write!(
            out,
            "<figure><img alt=\"{c}\" src=\"data:image/png;base64,{data}\"><figcaption>{c}</figcaption></figure>",
            c = esc(caption)
        );
    }
    for (i, r) in page.runs.iter().enumerate() {
        if !r.timeline.is_empty() {
            out.push_str(&latency_svg(i, r, &labels[i]));
        }
    }
}

fn provenance_html(out: &mut String, config: &serde_json::Value) {
    out.push_str("<h2 id=\"how\">How it was made</h2>");
    if let Some(cmd) = config["command"].as_str() {
        let _ = write!(out, "<p>Command:</p><pre id=\"command\">{}</pre>", esc(cmd));
    }
    let m = &config["machine"];
    let _ = write!(
        out,
        "<p>harness {} (commit <code>{}</code>), started {}; machine: {} cores, {} memory, Linux {}.</p>",
        esc(config["harness_version"].as_str().unwrap_or("?")),
        esc(config["commit"].as_str().unwrap_or("?")),
        esc(config["started"].as_str().unwrap_or("?")),
        m["cores"].as_u64().map_or_else(|| "?".into(), |c| c.to_string()),
        esc(m["memory"].as_str().unwrap_or("?")),
        esc(m["kernel"].as_str().unwrap_or("?")),
    );
    out.push_str("<div class=\"scroll\"><table id=\"settings\"><thead><tr><th>setting</th><th>value</th></tr></thead><tbody>");
    if let Some(map) = config.as_object() {
        for (k, v) in map {
            if matches!(k.as_str(), "command" | "machine" | "harness_version" | "commit" | "started") {
                continue;
            }
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ =
                write!(out, "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>", esc(k), esc(&text));
        }
    }
    out.push_str("</tbody></table></div>");
}

/// Writes `page` to `path`.
pub fn write(path: &Path, page: &Page<'_>) -> Result<(), String> {
    let mut out = String::with_capacity(1 << 20);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
         <title>{t}</title><style>{STYLE}</style></head><body><main><h1>{t}</h1>",
        t = esc(&page.title)
    );
    let when = page.config["started"].as_str().unwrap_or_default();
    let _ = write!(out, "<p class=\"note\">{} · {}</p>", esc(when), esc(&summary_line(page)));
    let labels = page.labels.clone().unwrap_or_else(|| page.runs.iter().map(RunSummary::label).collect());
    comparison(&mut out, page.runs, &labels);
    out.push_str(&page.extra);
    plots(&mut out, page, &labels);
    per_op(&mut out, page.runs, &labels);
    nodes(&mut out, page.runs, &labels);
    errors(&mut out, page.runs, &labels);
    provenance_html(&mut out, page.config);
    let _ = writeln!(out, "</main><script>{SCRIPT}</script></body></html>");
    std::fs::write(path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn summary_line(page: &Page<'_>) -> String {
    let c = page.config;
    let text = |k: &str| c[k].as_str().map_or_else(|| c[k].to_string(), str::to_owned);
    format!(
        "{} workload, {} keys of {} B, {} connections{}",
        text("workload"),
        text("keys"),
        text("value_size"),
        text("connections"),
        c["engine"]
            .as_str()
            .map(|e| format!(", local nodes: {e} engine, durability {}", text("durability")))
            .unwrap_or_default()
    )
}
