//! `soak.svg`: RSS, open descriptors (with threads and tokio tasks) and p99 latency against
//! time, one panel each, with the key set changes marked (grey lines).

use std::path::Path;

use plotters::prelude::*;

use crate::soak::report::Results;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
/// A legend label, its colour, and (seconds, value) points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREY: RGBColor = RGBColor(190, 190, 190);

pub fn draw(r: &Results, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "mcp-authz soak: {:.0} s at {:.0} checks/s ({})",
        r.settings.duration_s,
        r.settings.rate,
        if r.verdict.passed { "passed" } else { "FAILED" }
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((3, 1));
    let t_max = r.settings.duration_s;
    let marks: Vec<f64> = r.key_events.iter().skip(1).map(|e| e.t_s).collect();
    let s = &r.samples;
    let rss: Vec<(f64, f64)> = s
        .iter()
        .map(|x| (x.t_s, x.reading.rss_kib as f64 / 1024.0))
        .collect();
    let fds: Vec<(f64, f64)> = s.iter().map(|x| (x.t_s, x.reading.fds as f64)).collect();
    let threads: Vec<(f64, f64)> = s
        .iter()
        .map(|x| (x.t_s, x.reading.threads as f64))
        .collect();
    let tasks: Vec<(f64, f64)> = s
        .iter()
        .filter_map(|x| Some((x.t_s, x.reading.tasks? as f64)))
        .collect();
    let p99: Vec<(f64, f64)> = s.iter().map(|x| (x.t_s, x.p99_ms)).collect();
    let p50: Vec<(f64, f64)> = s.iter().map(|x| (x.t_s, x.p50_ms)).collect();
    let mut counts = vec![("open descriptors", RED, fds), ("threads", GREEN, threads)];
    if !tasks.is_empty() {
        counts.push(("tokio tasks", ORANGE, tasks));
    }
    panel(
        &panels[0],
        "resident memory (VmRSS)",
        "MB",
        t_max,
        &marks,
        &[("RSS", BLUE, rss)],
    )?;
    panel(
        &panels[1],
        "open descriptors, threads, tokio tasks",
        "count",
        t_max,
        &marks,
        &counts,
    )?;
    panel(
        &panels[2],
        "latency per window (from the intended send time)",
        "ms",
        t_max,
        &marks,
        &[("p99", RED, p99), ("p50", BLUE, p50)],
    )?;
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    t_max: f64,
    marks: &[f64],
    series: &[Series<'_>],
) -> Result<(), String> {
    let hi = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max);
    // From zero, with headroom: a flat line must look flat, not magnified noise.
    let hi = if hi > 0.0 { hi * 1.25 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max.max(1.0), 0.0..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(unit)
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())?;
    for &m in marks {
        chart
            .draw_series(LineSeries::new([(m, 0.0), (m, hi)], GREY.stroke_width(1)))
            .map_err(|e| e.to_string())?;
    }
    for (label, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
