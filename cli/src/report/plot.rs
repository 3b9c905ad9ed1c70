//! Training curves drawn with plotters: loss and gradient norm against samples seen, one line
//! per run or per group (the mean of a row's runs), as SVG text and as PNG files. Text layout
//! needs a TrueType font: `SFTCTL_FONT`, else DejaVu Sans or Liberation Sans from the system.

use super::collect::RunData;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Which curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    Loss,
    GradNorm,
}

impl Curve {
    pub fn name(self) -> &'static str {
        match self {
            Curve::Loss => "loss",
            Curve::GradNorm => "grad_norm",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Curve::Loss => "training loss",
            Curve::GradNorm => "gradient norm (global, before clipping)",
        }
    }
}

/// A named line of `(samples seen, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// At most `max` points of a series, evenly strided, keeping the last.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let stride = points.len().div_ceil(max);
    let last = *points.last().expect("non-empty");
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(stride).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

/// One line per run.
pub fn run_series(runs: &[&RunData], c: Curve) -> Vec<Series> {
    runs.iter()
        .filter(|r| !r.metrics.is_empty())
        .map(|r| {
            let pts = r
                .metrics
                .iter()
                .map(|m| {
                    let y = match c {
                        Curve::Loss => m.loss,
                        Curve::GradNorm => m.grad_norm,
                    };
                    (m.samples_seen as f64, y)
                })
                .filter(|p| p.1.is_finite())
                .collect();
            (r.name.clone(), thin(pts, 2000))
        })
        .collect()
}

/// One line per group: at each step index, the mean over the group's runs that reached it (runs
/// of one row share a batch size when the rows name it, so steps line up in samples seen).
pub fn group_series(groups: &[(String, Vec<&RunData>)], c: Curve) -> Vec<Series> {
    groups
        .iter()
        .filter_map(|(label, runs)| {
            let runs: Vec<&&RunData> = runs.iter().filter(|r| !r.metrics.is_empty()).collect();
            let n = runs.iter().map(|r| r.metrics.len()).max()?;
            let pts = (0..n)
                .map(|i| {
                    let at: Vec<_> = runs.iter().filter_map(|r| r.metrics.get(i)).collect();
                    let k = at.len() as f64;
                    let x = at.iter().map(|m| m.samples_seen as f64).sum::<f64>() / k;
                    let y = at
                        .iter()
                        .map(|m| match c {
                            Curve::Loss => m.loss,
                            Curve::GradNorm => m.grad_norm,
                        })
                        .sum::<f64>()
                        / k;
                    (x, y)
                })
                .filter(|p| p.1.is_finite())
                .collect();
            Some((format!("{label} (n={})", runs.len()), thin(pts, 2000)))
        })
        .collect()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    c: Curve,
    series: &[Series],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let x1 = xs.fold(1.0f64, f64::max);
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (y0, y1) = if y0.is_finite() {
        (y0.min(0.0), y1 * 1.05 + 1e-9)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("samples seen")
        .y_desc(c.label())
        .draw()
        .map_err(e)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    if series.len() <= 12 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// The chart as SVG text.
pub fn svg(title: &str, c: Curve, series: &[Series], size: (u32, u32)) -> Result<String, String> {
    need_font()?;
    let mut buf = String::new();
    draw(
        SVGBackend::with_string(&mut buf, size).into_drawing_area(),
        title,
        c,
        series,
    )?;
    Ok(buf)
}

static FONT: OnceLock<Option<&'static [u8]>> = OnceLock::new();

/// Registers a system TrueType font for PNG text; `None` when none is found.
fn font() -> Option<&'static [u8]> {
    *FONT.get_or_init(|| {
        let mut paths: Vec<String> = std::env::var("SFTCTL_FONT").into_iter().collect();
        paths.extend(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            ]
            .map(String::from),
        );
        let bytes: &'static [u8] = Box::leak(
            paths
                .iter()
                .find_map(|p| fs_err::read(p).ok())?
                .into_boxed_slice(),
        );
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).ok()?;
        Some(bytes)
    })
}

/// Text layout (SVG and PNG alike) measures glyphs with a registered font.
fn need_font() -> Result<(), String> {
    match font() {
        Some(_) => Ok(()),
        None => {
            Err("no TrueType font to lay out chart text (set SFTCTL_FONT to a .ttf file)".into())
        }
    }
}

/// Writes the chart as a PNG file.
pub fn png(
    path: &Path,
    title: &str,
    c: Curve,
    series: &[Series],
    size: (u32, u32),
) -> Result<(), String> {
    need_font()?;
    draw(
        BitMapBackend::new(path, size).into_drawing_area(),
        title,
        c,
        series,
    )
    .map_err(|e| format!("`{}`: {e}", path.display()))
}
