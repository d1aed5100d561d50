//! SVG charts beside the tables in docs/: one grouped bar chart per benchmark (a group per
//! cell, a bar per peer, the median as the bar and the min-max as a whisker), drawn with
//! plotters' SVG backend, so a reader sees at a glance who leads where.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

/// One peer's figures across the cells: medians and, per cell, (min, max). `None` where the
/// peer has no figure for a cell.
pub struct Series {
    pub name: String,
    pub medians: Vec<Option<f64>>,
    pub ranges: Vec<Option<(f64, f64)>>,
}

/// The peers' colours, in series order (Tandem first).
const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Writes a grouped bar chart of `series` over `cells` to `path` (SVG).
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    cells: &[String],
    series: &[Series],
) -> anyhow::Result<()> {
    let top = series
        .iter()
        .flat_map(|s| {
            s.medians
                .iter()
                .flatten()
                .chain(s.ranges.iter().flatten().map(|(_, max)| max))
        })
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9)
        // Room above the tallest bar for the legend (upper right).
        * 1.4;
    let width = (180 * cells.len().max(1) + 160) as u32;
    let root = SVGBackend::new(path, (width.max(640), 420)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let slots = series.len().max(1) + 1; // one gap between groups
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..(cells.len() * slots) as u32, 0f64..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(cells.len() * slots)
        .x_label_formatter(&|x| {
            let (cell, slot) = (*x as usize / slots, *x as usize % slots);
            if slot == series.len() / 2 {
                cells.get(cell).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(draw_error)?;
    for (index, peer) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let bars = peer
            .medians
            .iter()
            .enumerate()
            .filter_map(|(cell, median)| {
                let x = (cell * slots + index) as u32;
                median.map(|value| Rectangle::new([(x, 0.0), (x + 1, value)], colour.filled()))
            });
        chart
            .draw_series(bars)
            .map_err(draw_error)?
            .label(peer.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        let whiskers = peer.ranges.iter().enumerate().filter_map(|(cell, range)| {
            let x = (cell * slots + index) as u32;
            range
                .map(|(min, max)| PathElement::new(vec![(x, min), (x, max)], BLACK.stroke_width(2)))
        });
        chart.draw_series(whiskers).map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    drop(chart);
    drop(root);
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(text.contains("<svg"), "{} is not an SVG", path.display());
    Ok(())
}

fn draw_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_bar_per_peer_and_cell_and_names_them() {
        let dir = std::env::temp_dir().join(format!("tandem-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        let cells = vec!["1 KiB x64".to_owned(), "100 KiB x64".to_owned()];
        let series = vec![
            Series {
                name: "Tandem".into(),
                medians: vec![Some(61.0), Some(48.0)],
                ranges: vec![Some((59.0, 63.0)), Some((47.0, 50.0))],
            },
            Series {
                name: "HAProxy".into(),
                medians: vec![Some(60.0), None],
                ranges: vec![Some((58.0, 62.0)), None],
            },
        ];
        grouped_bars(&path, "req/s", "thousand requests/s", &cells, &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for text in ["Tandem", "HAProxy", "1 KiB x64", "100 KiB x64", "req/s"] {
            assert!(svg.contains(text), "{text} in the chart");
        }
        // Three bars (HAProxy has no figure for the second cell) plus the legend's two boxes.
        let filled = svg.matches("<rect").count();
        assert!(filled >= 5, "{filled} rectangles");
    }
}
