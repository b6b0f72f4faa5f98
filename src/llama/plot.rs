//! The loss-curve picture: training loss (blue) and validation loss (red) against the step, on a light grid
//! (one horizontal line per nat), drawn with plotters' bitmap backend.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Writes a PNG of the two curves (steps, loss in nats).
pub fn loss_curve(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)]) -> Result<()> {
    let fail = |e: String| Error::invalid("loss.png", format!("{}: {e}", path.display()));
    let (w, h) = (900i32, 500i32);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let finite = |p: &&(u64, f64)| p.1.is_finite();
    let all: Vec<&(u64, f64)> = train.iter().chain(val).filter(finite).collect();
    if all.is_empty() {
        return root.present().map_err(|e| fail(e.to_string()));
    }
    let max_step = all.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let max_loss = all.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9).ceil();
    let margin = 30;
    let to_px = |s: u64, l: f64| {
        let x = margin + ((s as f64 / max_step) * (w - 2 * margin) as f64) as i32;
        let y = h - margin - ((l / max_loss) * (h - 2 * margin) as f64) as i32;
        (x, y)
    };
    for nat in 0..=max_loss as i32 {
        let y = to_px(0, nat as f64).1;
        root.draw(&PathElement::new(
            vec![(margin, y), (w - margin, y)],
            RGBColor(220, 220, 220),
        ))
        .map_err(|e| fail(e.to_string()))?;
    }
    let axes = vec![
        (margin, margin),
        (margin, h - margin),
        (w - margin, h - margin),
    ];
    root.draw(&PathElement::new(axes, BLACK))
        .map_err(|e| fail(e.to_string()))?;
    for (points, color) in [(train, BLUE), (val, RED)] {
        let line: Vec<(i32, i32)> = points
            .iter()
            .filter(finite)
            .map(|&(s, l)| to_px(s, l))
            .collect();
        root.draw(&PathElement::new(line, color.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))
}
