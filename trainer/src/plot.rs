//! Training and validation loss curves drawn from `RUN/metrics.jsonl` into `RUN/loss.png`.
//!
//! Text is rendered with a TrueType font found at run time (`PLM_PLOT_FONT`, else DejaVu Sans
//! or Liberation Sans from Debian's font packages); without one the curves are drawn unlabelled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::train_loop::{LOSS_PLOT, METRICS};

/// Errors while drawing a loss plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The metrics file cannot be read or the image cannot be moved into place.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A metrics line is not JSON.
    #[error("{path}: line {line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Nothing to plot yet.
    #[error("{0}: no training loss recorded")]
    Empty(PathBuf),
    /// The drawing backend failed.
    #[error("drawing {path}: {reason}")]
    Draw {
        /// The image.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

/// Loss curves by optimizer step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossCurves {
    /// `(step, training loss)`.
    pub train: Vec<(f64, f64)>,
    /// `(step, validation loss)`.
    pub valid: Vec<(f64, f64)>,
}

/// Reads the curves from a metrics file. A step logged twice (work redone after a resume)
/// keeps its last record; validation loss falls back to `ln(valid_perplexity)`.
pub fn read_curves(metrics: &Path) -> Result<LossCurves, PlotError> {
    let text = std::fs::read_to_string(metrics).map_err(|e| PlotError::Io {
        path: metrics.into(),
        source: e,
    })?;
    let mut train = BTreeMap::new();
    let mut valid = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_str(line).map_err(|e| PlotError::Parse {
                path: metrics.into(),
                line: i + 1,
                reason: e.to_string(),
            })?;
        let Some(step) = record["step"].as_u64() else {
            continue;
        };
        if let Some(loss) = record["loss"].as_f64().filter(|l| l.is_finite()) {
            train.insert(step, loss);
        }
        let v = record["valid_loss"]
            .as_f64()
            .or_else(|| record["valid_perplexity"].as_f64().map(f64::ln));
        if let Some(v) = v.filter(|v| v.is_finite()) {
            valid.insert(step, v);
        }
    }
    let points = |m: BTreeMap<u64, f64>| m.into_iter().map(|(s, l)| (s as f64, l)).collect();
    Ok(LossCurves {
        train: points(train),
        valid: points(valid),
    })
}

/// Exponential moving average (smoothing `alpha` of the new value).
fn smooth(points: &[(f64, f64)], alpha: f64) -> Vec<(f64, f64)> {
    let mut avg = None;
    points
        .iter()
        .map(|&(x, y)| {
            let a = avg.map_or(y, |a: f64| a + alpha * (y - a));
            avg = Some(a);
            (x, a)
        })
        .collect()
}

const FONT_FAMILY: &str = "sans-serif";

/// Registers a TrueType font with plotters once; whether one is available.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates = std::env::var_os("PLM_PLOT_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(
                [
                    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
                ]
                .map(PathBuf::from),
            );
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // Registered for the life of the process, as plotters requires.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws `curves` into a PNG at `png` (written to a temporary name, then renamed).
pub fn draw(curves: &LossCurves, png: &Path, title: &str) -> Result<(), PlotError> {
    let draw_err = |e: String| PlotError::Draw {
        path: png.into(),
        reason: e,
    };
    if curves.train.is_empty() {
        return Err(PlotError::Empty(png.into()));
    }
    let all = curves.train.iter().chain(&curves.valid);
    let (mut x_max, mut y_min, mut y_max) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let (y_lo, y_hi) = ((y_min - pad).max(0.0), y_max + pad);
    let text = font_available();
    let tmp = png.with_file_name(format!(
        ".{}.tmp-{}.png",
        png.file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let root = BitMapBackend::new(&tmp, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(16)
            .x_label_area_size(if text { 44 } else { 8 })
            .y_label_area_size(if text { 60 } else { 8 });
        if text {
            builder.caption(title, (FONT_FAMILY, 22));
        }
        let mut chart = builder
            .build_cartesian_2d(0f64..x_max, y_lo..y_hi)
            .map_err(|e| draw_err(e.to_string()))?;
        let steps = |x: &f64| format!("{x:.0}");
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("step").y_desc("loss").x_label_formatter(&steps);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| draw_err(e.to_string()))?;
        let raw = RGBColor(31, 119, 180).mix(0.3);
        chart
            .draw_series(LineSeries::new(curves.train.iter().copied(), raw))
            .map_err(|e| draw_err(e.to_string()))?;
        let blue = RGBColor(31, 119, 180);
        let series = chart
            .draw_series(LineSeries::new(
                smooth(&curves.train, 0.1),
                blue.stroke_width(2),
            ))
            .map_err(|e| draw_err(e.to_string()))?;
        if text {
            series
                .label("training (smoothed)")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue));
        }
        if !curves.valid.is_empty() {
            let red = RGBColor(214, 39, 40);
            let series = chart
                .draw_series(LineSeries::new(
                    curves.valid.iter().copied(),
                    red.stroke_width(2),
                ))
                .map_err(|e| draw_err(e.to_string()))?;
            if text {
                series
                    .label("validation")
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red));
            }
            chart
                .draw_series(
                    curves
                        .valid
                        .iter()
                        .map(|&p| Circle::new(p, 3, red.filled())),
                )
                .map_err(|e| draw_err(e.to_string()))?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| draw_err(e.to_string()))?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    std::fs::rename(&tmp, png).map_err(|e| PlotError::Io {
        path: png.into(),
        source: e,
    })
}

/// Redraws `RUN/loss.png` from `RUN/metrics.jsonl`; returns the image's path.
pub fn plot_run(run: &Path) -> Result<PathBuf, PlotError> {
    let curves = read_curves(&run.join(METRICS))?;
    let png = run.join(LOSS_PLOT);
    let title = run
        .file_name()
        .map(|n| format!("{}: loss", n.to_string_lossy()))
        .unwrap_or_else(|| "loss".into());
    draw(&curves, &png, &title)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_valid_png_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for step in 1..=40u64 {
            let loss = 3.3 - 0.02 * step as f64;
            let mut rec = serde_json::json!({"step": step, "loss": loss});
            if step % 10 == 0 {
                rec["valid_perplexity"] = (loss + 0.1).exp().into();
            }
            lines.push_str(&format!("{rec}\n"));
        }
        // A resumed run re-logs step 40: the last record wins.
        lines.push_str("{\"step\":40,\"loss\":1.0,\"valid_loss\":1.5}\n");
        std::fs::write(dir.path().join(METRICS), lines).unwrap();
        let curves = read_curves(&dir.path().join(METRICS)).unwrap();
        assert_eq!(curves.train.len(), 40);
        assert_eq!(curves.valid.len(), 4);
        assert_eq!(curves.train[39], (40.0, 1.0));
        assert!((curves.valid[0].1 - (3.1 + 0.1)).abs() < 1e-9);

        let png = plot_run(dir.path()).unwrap();
        assert_eq!(png, dir.path().join(LOSS_PLOT));
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (960, 600));
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // Not a blank canvas: the curves put non-white pixels down.
        let rgb = img.to_rgb8();
        let coloured = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(coloured > 1000, "{coloured} non-white pixels");
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn empty_or_corrupt_metrics_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METRICS), "").unwrap();
        assert!(matches!(plot_run(dir.path()), Err(PlotError::Empty(_))));
        std::fs::write(
            dir.path().join(METRICS),
            "{\"step\":1,\"loss\":2}\nnot json\n",
        )
        .unwrap();
        let err = plot_run(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
