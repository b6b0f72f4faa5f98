//! The run's loss, as a picture and a table. `loss.png`: training loss (blue line) and validation loss (red
//! line with dots) against the step, with numbered axes, axis labels, a legend and a title, drawn with plotters'
//! bitmap backend in DejaVu Sans (a subset bundled in `data/fonts`, with its license, so no system font is
//! needed). `metrics.csv`: the same points as columns, for spreadsheets.

use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans reduced to ASCII and a few signs (`data/fonts/LICENSE`).
const FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans-subset.ttf");
/// The family name the font is registered under.
const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters once; an error if it cannot be read.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "loss.png",
            "the bundled font cannot be read",
        ))
    }
}

/// Writes a PNG of the two curves (steps, loss in nats per token) under `title`.
pub fn loss_curve(
    path: &Path,
    title: &str,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(&root, title, train, val)
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(|e| Error::invalid("loss.png", format!("{}: {e}", path.display())))
}

/// The picture's size in pixels.
const SIZE: (u32, u32) = (1000, 600);

/// Draws the chart on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
) -> std::result::Result<(), String> {
    font().map_err(|e| e.to_string())?;
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(fail)?;
    let finite = |p: &&(u64, f64)| p.1.is_finite();
    let train: Vec<(f64, f64)> = train
        .iter()
        .filter(finite)
        .map(|&(s, l)| (s as f64, l))
        .collect();
    let val: Vec<(f64, f64)> = val
        .iter()
        .filter(finite)
        .map(|&(s, l)| (s as f64, l))
        .collect();
    let all = || train.iter().chain(&val);
    let max_step = all().map(|p| p.0).fold(1.0, f64::max);
    let (low, high) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (low, high) = if low.is_finite() {
        (low, high)
    } else {
        (0.0, 1.0)
    };
    let pad = ((high - low) * 0.05).max(0.05);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_step, (low - pad).max(0.0)..high + pad)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (nats per token)")
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(238, 238, 238))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(fail)?;
    let line = |color: RGBColor| color.stroke_width(2);
    chart
        .draw_series(LineSeries::new(train.iter().copied(), line(BLUE)))
        .map_err(fail)?
        .label("train")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line(BLUE)));
    chart
        .draw_series(LineSeries::new(val.iter().copied(), line(RED)))
        .map_err(fail)?
        .label("validation")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line(RED)));
    chart
        .draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))
        .map_err(fail)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(fail)?;
    Ok(())
}

/// The loss table: `step,train_loss,val_loss`, one row per step that has either (an empty cell where it has
/// not), steps in order.
pub fn loss_table(train: &[(u64, f64)], val: &[(u64, f64)]) -> String {
    let mut rows: std::collections::BTreeMap<u64, (Option<f64>, Option<f64>)> = Default::default();
    for &(s, l) in train {
        rows.entry(s).or_default().0 = Some(l);
    }
    for &(s, l) in val {
        rows.entry(s).or_default().1 = Some(l);
    }
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut out = String::from("step,train_loss,val_loss\n");
    for (step, (t, v)) in rows {
        let _ = writeln!(out, "{step},{},{}", cell(t), cell(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_step_with_empty_cells_where_a_loss_is_missing() {
        let table = loss_table(&[(1, 4.5), (2, 4.25), (3, 4.0)], &[(2, 4.375), (4, 3.5)]);
        assert_eq!(
            table,
            "step,train_loss,val_loss\n1,4.5,\n2,4.25,4.375\n3,4,\n4,,3.5\n"
        );
    }

    /// The chart drawn into memory: `SIZE` RGB pixels.
    fn pixels(title: &str, train: &[(u64, f64)], val: &[(u64, f64)]) -> Vec<u8> {
        let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
            draw(&root, title, train, val).unwrap();
            root.present().unwrap();
        }
        buf
    }

    /// Pixels in `x0..x1` × `y0..y1` for which `pick(r, g, b)` holds.
    fn count(
        buf: &[u8],
        (x0, x1): (u32, u32),
        (y0, y1): (u32, u32),
        pick: impl Fn(u8, u8, u8) -> bool,
    ) -> usize {
        let mut n = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y * SIZE.0 + x) * 3) as usize;
                n += usize::from(pick(buf[i], buf[i + 1], buf[i + 2]));
            }
        }
        n
    }

    #[test]
    fn the_picture_has_a_title_numbered_axes_and_both_curves() {
        let train: Vec<(u64, f64)> = (1..=50).map(|s| (s, 5.0 - s as f64 * 0.05)).collect();
        let val = [(10, 4.7), (20, 4.2), (30, f64::NAN), (50, 2.6)];
        let buf = pixels("small · 50 steps · 1.234 bits/byte", &train, &val);
        let dark = |r: u8, g: u8, b: u8| r < 100 && g < 100 && b < 100;
        let (w, h) = SIZE;
        // Text: the title above the plot, the y axis' numbers and label left of it, the x axis' below it.
        assert!(count(&buf, (0, w), (0, 40), dark) > 200, "title");
        assert!(
            count(&buf, (0, 70), (40, h - 70), dark) > 300,
            "y axis numbers and label"
        );
        assert!(
            count(&buf, (90, w), (h - 60, h), dark) > 300,
            "x axis numbers and label"
        );
        // The curves: blue train line and red validation line and dots inside the plot.
        let blue = |r: u8, g: u8, b: u8| b > 200 && r < 60 && g < 60;
        let red = |r: u8, g: u8, b: u8| r > 200 && g < 60 && b < 60;
        assert!(count(&buf, (90, w), (40, h - 60), blue) > 500);
        assert!(count(&buf, (90, w), (40, h - 60), red) > 300);
        // Without validation points there is no red; without any point at all it still draws.
        let only_train = pixels("t", &train, &[]);
        assert_eq!(count(&only_train, (90, w - 200), (100, h - 60), red), 0);
        pixels("empty", &[], &[]);
    }

    #[test]
    fn the_picture_is_written_as_a_png() {
        let dir = std::env::temp_dir().join(format!("tapegrad-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.png");
        loss_curve(&path, "run", &[(1, 3.0), (2, 2.5)], &[(2, 2.7)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let err = loss_curve(&dir.join("missing/loss.png"), "run", &[(1, 3.0)], &[]).unwrap_err();
        assert!(err.to_string().contains("missing/loss.png"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
