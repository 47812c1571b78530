//! SVG plot of the privacy/latency trade-off: recovery rate and attack latency against K,
//! one line per flooding sigma.

use std::path::Path;

use plotters::prelude::*;

use crate::report::AuditReport;
use crate::{Error, Result};

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Distinct sigmas of the report, in order of first appearance.
fn sigmas(report: &AuditReport) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for r in &report.results {
        if !out.contains(&r.flood_sigma) {
            out.push(r.flood_sigma);
        }
    }
    out
}

/// `(k, value)` points of one sigma, sorted by K.
fn series(
    report: &AuditReport,
    sigma: f64,
    f: impl Fn(&crate::report::AuditRow) -> f64,
) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = report
        .results
        .iter()
        .filter(|r| r.flood_sigma == sigma)
        .map(|r| (r.k as f64, f(r)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Renders the two-panel plot as an SVG document.
///
/// # Errors
/// [`Error::Plot`] if drawing fails.
pub fn render_svg(report: &AuditReport) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let k_max = report.results.iter().map(|r| r.k).max().unwrap_or(1).max(1) as f64;
        let t_max = report
            .results
            .iter()
            .map(|r| r.s_per_token)
            .fold(1e-3, f64::max)
            * 1.15;
        let sig = sigmas(report);

        let mut rec = ChartBuilder::on(&left)
            .caption("Exact token recovery vs K", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..k_max, 0f64..1.05f64)?;
        rec.configure_mesh()
            .x_desc("K (layers before release)")
            .y_desc("recovered fraction")
            .draw()?;
        for (i, &s) in sig.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            rec.draw_series(LineSeries::new(
                series(report, s, |r| r.token_recovery),
                c.stroke_width(2),
            ))?
            .label(format!("flood sigma {s}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
            rec.draw_series(
                series(report, s, |r| r.token_recovery)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, c.filled())),
            )?;
        }
        rec.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        let mut lat = ChartBuilder::on(&right)
            .caption("Attack time per token vs K", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..k_max, 0f64..t_max)?;
        lat.configure_mesh()
            .x_desc("K (layers before release)")
            .y_desc("seconds per token")
            .draw()?;
        for (i, &s) in sig.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            lat.draw_series(LineSeries::new(
                series(report, s, |r| r.s_per_token),
                c.stroke_width(2),
            ))?
            .label(format!("flood sigma {s}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        }
        lat.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Writes the plot to `path`.
///
/// # Errors
/// [`Error::Plot`] if drawing fails, [`Error::Io`] if the file cannot be written.
pub fn write_svg(report: &AuditReport, path: &Path) -> Result<()> {
    let svg = render_svg(report)?;
    std::fs::write(path, svg).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::AuditRow;

    #[test]
    fn svg_has_one_line_per_sigma() {
        let row = |k, s, r| AuditRow {
            k,
            flood_sigma: s,
            token_recovery: r,
            field_recovery: None,
            s_per_token: 0.1 * k as f64,
            probe_top1: 0.5,
        };
        let rep = AuditReport {
            results: vec![
                row(0, 0.0, 1.0),
                row(4, 0.0, 0.9),
                row(0, 0.1, 0.5),
                row(4, 0.1, 0.2),
            ],
        };
        let svg = render_svg(&rep).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("flood sigma 0.1"));
        // Two panels x two sigmas = four polylines, plus legend paths.
        assert!(svg.matches("<polyline").count() >= 4);
    }
}
