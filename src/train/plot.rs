//! The per-epoch plot: coverage, hierarchy_B, Q and loss, one panel each (SVG, plotters;
//! no font or system dependencies).

use std::path::Path;

use plotters::prelude::*;

use super::TrainError;

/// One epoch's values (None where not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub epoch: u64,
    pub loss: Option<f64>,
    pub coverage: Option<f64>,
    pub hierarchy: Option<f64>,
    pub q: Option<f64>,
}

type Series = (&'static str, fn(&Point) -> Option<f64>, RGBColor);

/// Write the plot of `history` to `path` (SVG).
pub fn write_plot(path: &Path, history: &[Point]) -> Result<(), TrainError> {
    let err = |e: String| TrainError::Save(format!("{}: {e}", path.display()));
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let panels = root.split_evenly((2, 2));
    let series: [Series; 4] = [
        ("coverage", |p| p.coverage, BLUE),
        ("hierarchy_B", |p| p.hierarchy, RED),
        ("Q", |p| p.q, GREEN),
        ("loss", |p| p.loss, BLACK),
    ];
    let max_epoch = history.iter().map(|p| p.epoch).max().unwrap_or(1).max(1);
    for (area, (name, get, color)) in panels.iter().zip(series) {
        let pts: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|p| {
                get(p)
                    .filter(|v| v.is_finite())
                    .map(|v| (p.epoch as f64, v))
            })
            .collect();
        let (lo, hi) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), (_, v)| {
                (l.min(*v), h.max(*v))
            });
        let (lo, hi) = if pts.is_empty() {
            (0.0, 1.0)
        } else if hi - lo < 1e-9 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        };
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max_epoch as f64, lo..hi)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_four_panels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let history: Vec<Point> = (0..5)
            .map(|e| Point {
                epoch: e,
                loss: (e > 0).then(|| 1.0 / (e as f64)),
                coverage: Some(1.0),
                hierarchy: Some(-0.1 * e as f64),
                q: Some(0.2 * e as f64),
            })
            .collect();
        write_plot(&path, &history).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for name in ["coverage", "hierarchy_B", "Q", "loss"] {
            assert!(texts.contains(&name), "no caption {name}");
        }
        // One marker per measured value: 5 coverage + 5 hierarchy + 5 Q + 4 loss.
        assert_eq!(svg.matches("<circle").count(), 19);
    }
}
