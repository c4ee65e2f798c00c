//! `latency.svg`: latency against percentile (on a "nines" axis: 50, 90, 99, 99.9) for every
//! contender, at half rate (top) and at saturation (bottom), direct gRPC (left) and through
//! Envoy (right). Each curve merges the contender's valid rounds.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::contenders::Kind;
use crate::results::{PhaseResult, RoundResult, RunResults};

const COLORS: [RGBColor; 7] = [
    RGBColor(0, 0, 0),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(90, 90, 90),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// x = -log10(1 - p): 0 is p0 (the fastest), 1 is p90, 2 is p99, 3 is p99.9.
fn nines(p: f64) -> f64 {
    -(1.0 - p).log10()
}

fn percentile_label(x: &f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    let text = if p >= 99.0 {
        format!("{p:.1}")
    } else {
        format!("{p:.0}")
    };
    format!("p{}", text.trim_end_matches(".0"))
}

/// Which phase of a round a panel shows.
type Pick = fn(&RoundResult) -> Option<&PhaseResult>;

type Curve = (String, RGBColor, Vec<(f64, f64)>);

fn curves(r: &RunResults, envoy: bool, pick: Pick) -> Vec<Curve> {
    Kind::ALL
        .iter()
        .enumerate()
        .filter(|(_, k)| k.is_envoy() == envoy)
        .filter_map(|(i, k)| {
            let mut merged: Option<Histogram<u64>> = None;
            let mut overloaded = false;
            for x in r.of(*k).values() {
                let Some(p) = pick(x) else { continue };
                overloaded |= p.overloaded;
                match &mut merged {
                    Some(h) => {
                        let _ = h.add(&p.hist);
                    }
                    None => merged = Some(p.hist.clone()),
                }
            }
            let h = merged.filter(|h| !h.is_empty())?;
            let points = (0..=151)
                .map(|i| f64::from(i) * 0.02)
                .map(|x| {
                    let q = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(q).max(1) as f64 / 1000.0)
                })
                .collect();
            let label = if overloaded {
                format!("{} (overloaded: could not keep the rate)", k.label())
            } else {
                k.label().to_owned()
            };
            Some((label, COLORS[i % COLORS.len()], points))
        })
        .collect()
}

pub fn draw(r: &RunResults, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (2100, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = if r.settings.smoke {
        "mcp-authz load benchmark: latency by percentile (SMOKE RUN: not meaningful)"
    } else {
        "mcp-authz load benchmark: latency by percentile"
    };
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    // Row-major: direct gRPC on top, through Envoy below (its last panel stays empty).
    let panels = root.split_evenly((2, 3));
    let specs: [(bool, &str, Pick); 5] = [
        (false, "direct gRPC, fixed rate (open loop)", |x| {
            x.fixed.as_ref()
        }),
        (
            false,
            "direct gRPC, half of mcp-authz's saturation rate (open loop)",
            |x| x.half.as_ref(),
        ),
        (false, "direct gRPC, saturation (closed loop)", |x| {
            x.saturation.as_ref()
        }),
        (
            true,
            "through Envoy, half of Envoy-no-auth's saturation rate (open loop)",
            |x| x.half.as_ref(),
        ),
        (true, "through Envoy, saturation (closed loop)", |x| {
            x.saturation.as_ref()
        }),
    ];
    for (area, (envoy, caption, pick)) in panels.iter().zip(specs) {
        let series = curves(r, envoy, pick);
        panel(area, caption, &series)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    series: &[Curve],
) -> Result<(), String> {
    let values = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y));
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(0.0f64, f64::max);
    let (lo, hi) = if series.is_empty() || !lo.is_finite() {
        (0.01, 10.0)
    } else {
        ((lo * 0.8).max(0.001), (hi * 1.25).max(lo * 2.0))
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..nines(0.999) + 0.02, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log)")
        .x_labels(4)
        .y_labels(8)
        .light_line_style(WHITE)
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| e.to_string())?;
    if series.is_empty() {
        return Ok(());
    }
    for (label, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
