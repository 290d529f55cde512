//! `chat-bench plot`: p99 latency against deliveries/s, one panel per scenario, one line
//! per server, drawn from the JSON lines of a `scripts/bench.sh --sweep` run.
//!
//! A sweep runs the same fan-out scenario at rising fixed rates. Each run is one JSON line
//! (what `chat-bench fanout --json` prints) that `bench.sh` tags `sweep-<scenario>`; the
//! server is the line's `label`. A point is the run's achieved deliveries/s and its p99
//! latency; a run that lost messages is past the server's capacity and is drawn hollow,
//! so the knee of each curve is visible.
//!
//! Text is rendered with `ab_glyph` from a TrueType font read at run time (DejaVu Sans,
//! which Debian installs with fontconfig, unless `--font` says otherwise), so the tool
//! links no font library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Deserialize;

use crate::BenchError;

/// The font used when `--font` is not given.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// What to draw and where.
#[derive(Debug, Clone)]
pub struct PlotConfig {
    /// JSON lines of a sweep (`target/bench/results-….jsonl`).
    pub results: PathBuf,
    /// The PNG to write.
    pub output: PathBuf,
    /// A TrueType font for the labels.
    pub font: PathBuf,
    /// The image's title.
    pub title: String,
}

/// The fields of a result line the plot reads.
#[derive(Debug, Deserialize)]
struct Line {
    tag: Option<String>,
    #[serde(default)]
    label: String,
    fanout: Option<FanoutLine>,
}

#[derive(Debug, Deserialize)]
struct FanoutLine {
    deliveries_per_s: f64,
    loss: i64,
    latency: LatencyLine,
}

#[derive(Debug, Deserialize)]
struct LatencyLine {
    p99_us: Option<f64>,
}

/// One measured point of a curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Deliveries per second achieved.
    pub deliveries_per_s: f64,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// The run lost messages: past capacity.
    pub lossy: bool,
}

/// Curves by scenario (`a`, `b`…), then by server, points sorted by deliveries/s.
pub type Curves = BTreeMap<String, BTreeMap<String, Vec<Point>>>;

/// Reads the sweep points out of a results file's JSON lines. Lines that are not sweep
/// runs (the table's runs, failed runs) are skipped; a line that is not JSON is an error.
pub fn read_curves(text: &str) -> Result<Curves, BenchError> {
    let mut curves = Curves::new();
    for (n, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw)
            .map_err(|e| BenchError::Config(format!("results line {}: {e}", n + 1)))?;
        let Some(scenario) = line.tag.as_deref().and_then(|t| t.strip_prefix("sweep-")) else {
            continue;
        };
        let Some(fanout) = line.fanout else { continue };
        let Some(p99_us) = fanout.latency.p99_us else {
            continue; // nothing was delivered: no latency to draw
        };
        curves
            .entry(scenario.to_owned())
            .or_default()
            .entry(line.label)
            .or_default()
            .push(Point {
                deliveries_per_s: fanout.deliveries_per_s,
                p99_ms: p99_us / 1000.0,
                lossy: fanout.loss != 0,
            });
    }
    for servers in curves.values_mut() {
        for points in servers.values_mut() {
            points.sort_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
        }
    }
    Ok(curves)
}

/// Reads the results and the font, and writes the PNG.
pub fn run(cfg: &PlotConfig) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(&cfg.results)
        .map_err(|e| BenchError::io(format!("read {}", cfg.results.display()), e))?;
    let curves = read_curves(&text)?;
    if curves.is_empty() {
        return Err(BenchError::Config(format!(
            "{} holds no sweep runs (tags `sweep-…`): run `scripts/bench.sh --sweep`",
            cfg.results.display()
        )));
    }
    register_font(&cfg.font)?;
    draw(&curves, &cfg.output, &cfg.title)
}

/// `ab_glyph` wants the font for the whole process: it is read once and kept.
fn register_font(path: &Path) -> Result<(), BenchError> {
    let bytes = std::fs::read(path).map_err(|e| {
        BenchError::io(
            format!(
                "read the font {} (give another with --font)",
                path.display()
            ),
            e,
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| BenchError::Config(format!("{} is not a usable font", path.display())))
}

/// A fixed colour per server, so the same server has the same colour in every panel.
fn colour(server: &str) -> RGBColor {
    match server {
        "ours" => RGBColor(0x1f, 0x77, 0xb4),
        "node" => RGBColor(0xd6, 0x27, 0x28),
        "relay" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x94, 0x67, 0xbd),
    }
}

fn draw_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Config(format!("drawing the plot: {e}"))
}

fn draw(curves: &Curves, output: &Path, title: &str) -> Result<(), BenchError> {
    let panels = curves.len();
    let width = 640 * u32::try_from(panels).unwrap_or(1);
    let root = BitMapBackend::new(output, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(draw_error)?;
    let areas = root.split_evenly((1, panels));
    for (area, (scenario, servers)) in areas.iter().zip(curves) {
        let points = servers.values().flatten();
        let max_x = points
            .clone()
            .map(|p| p.deliveries_per_s)
            .fold(1.0, f64::max);
        let (min_y, max_y) = points
            .map(|p| p.p99_ms)
            .fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        // Decades around the data, so the log axis has readable ends.
        let low = 10f64.powf(min_y.max(0.01).log10().floor());
        let high = 10f64.powf(max_y.max(low * 10.0).log10().ceil());
        let mut chart = ChartBuilder::on(area)
            .caption(format!("scenario ({scenario})"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..max_x * 1.08 / 1000.0, (low..high).log_scale())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("deliveries per second (thousands)")
            .y_desc("p99 latency (ms, log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y}")
                }
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        for (server, points) in servers {
            let c = colour(server);
            let line = points
                .iter()
                .map(|p| (p.deliveries_per_s / 1000.0, p.p99_ms));
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(2)))
                .map_err(draw_error)?
                .label(server.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|p| {
                    let style = if p.lossy {
                        c.stroke_width(2)
                    } else {
                        c.filled()
                    };
                    Circle::new((p.deliveries_per_s / 1000.0, p.p99_ms), 4, style)
                }))
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_lines_become_sorted_curves_and_other_lines_are_skipped() {
        let text = r#"
{"tag":"sweep-a","label":"ours","fanout":{"deliveries_per_s":200000.0,"loss":0,"latency":{"p99_us":900.0}}}
{"tag":"sweep-a","label":"ours","fanout":{"deliveries_per_s":100000.0,"loss":0,"latency":{"p99_us":500.0}}}
{"tag":"sweep-a","label":"node","fanout":{"deliveries_per_s":90000.0,"loss":12,"latency":{"p99_us":250000.0}}}
{"tag":"a","label":"ours","fanout":{"deliveries_per_s":1.0,"loss":0,"latency":{"p99_us":1.0}}}
{"tag":"sweep-b","label":"relay","failed":true}
{"tag":"sweep-b","label":"relay","fanout":{"deliveries_per_s":0.0,"loss":5,"latency":{"p99_us":null}}}
"#;
        let curves = read_curves(text).unwrap();
        assert_eq!(curves.len(), 1, "only scenario a has points: {curves:?}");
        let ours = &curves["a"]["ours"];
        assert_eq!(ours.len(), 2);
        assert!(
            ours[0].deliveries_per_s < ours[1].deliveries_per_s,
            "sorted"
        );
        assert!((ours[0].p99_ms - 0.5).abs() < 1e-9, "µs → ms");
        assert!(curves["a"]["node"][0].lossy);
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error_naming_it() {
        let err = read_curves("{}\nnot json\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn the_png_is_written_when_the_default_font_exists() {
        if !Path::new(DEFAULT_FONT).exists() {
            eprintln!("skipped: {DEFAULT_FONT} is not installed");
            return;
        }
        let text = r#"{"tag":"sweep-a","label":"ours","fanout":{"deliveries_per_s":1000.0,"loss":0,"latency":{"p99_us":800.0}}}
{"tag":"sweep-a","label":"ours","fanout":{"deliveries_per_s":5000.0,"loss":1,"latency":{"p99_us":9000.0}}}"#;
        let dir = std::env::temp_dir().join(format!("chat-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let results = dir.join("r.jsonl");
        std::fs::write(&results, text).unwrap();
        let output = dir.join("p.png");
        run(&PlotConfig {
            results,
            output: output.clone(),
            font: DEFAULT_FONT.into(),
            title: "test".into(),
        })
        .unwrap();
        let png = std::fs::read(&output).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
