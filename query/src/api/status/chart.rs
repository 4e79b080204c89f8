//! The status page's small charts, drawn on the server as inline SVG: a sparkline of a series
//! (throughput per 5 minutes, round-trip p95 per bucket) and a utilisation bar coloured by
//! threshold.
//!
//! In: numbers. Out: [`Markup`] (SVG elements written through maud, so even the numbers pass
//! through its escaping; nothing here is pre-escaped). A gap in a series (`None`: no samples)
//! breaks the line rather than drawing a zero: no round trip is not a fast one.

use maud::{html, Markup};

/// Width and height of a sparkline, in CSS pixels.
pub(super) const SPARKLINE_SIZE: (f64, f64) = (150.0, 32.0);
/// Width and height of a utilisation bar, in CSS pixels.
pub(super) const BAR_SIZE: (f64, f64) = (100.0, 12.0);
/// Utilisation from which a bar turns amber.
pub(super) const UTILISATION_WARNING: f64 = 0.7;
/// Utilisation from which a bar turns red.
pub(super) const UTILISATION_CRITICAL: f64 = 0.9;

const GREEN: &str = "#2f9e5a";
const AMBER: &str = "#d9930d";
const RED: &str = "#d3452f";
const TRACK: &str = "#e6e9ef";

/// Inner margin, so that the line and the last-point dot are not clipped.
const PAD: f64 = 2.5;
/// Share of the height the peak reaches: a steady series reads as a line, not a filled box.
const HEADROOM: f64 = 0.85;

/// One run of consecutive values as SVG coordinates.
#[derive(Debug, PartialEq)]
struct Run {
    points: Vec<(f64, f64)>,
}

/// The runs of `values` (split at `None`) scaled into `width` × `height`, the largest value at
/// the top; all zeros (or no values) lie on the bottom line.
fn runs(values: &[Option<f64>], width: f64, height: f64) -> Vec<Run> {
    let peak = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let slots = values.len().saturating_sub(1).max(1) as f64;
    let x = |index: usize| PAD + index as f64 * (width - 2.0 * PAD) / slots;
    let y = |value: f64| {
        let share = if peak > 0.0 {
            (value / peak).clamp(0.0, 1.0)
        } else {
            0.0
        };
        height - PAD - share * HEADROOM * (height - 2.0 * PAD)
    };
    let mut runs: Vec<Run> = Vec::new();
    let mut open = false;
    for (index, value) in values.iter().enumerate() {
        match value {
            Some(value) if value.is_finite() => {
                let point = (x(index), y(*value));
                match runs.last_mut() {
                    Some(run) if open => run.points.push(point),
                    _ => runs.push(Run { points: vec![point] }),
                }
                open = true;
            }
            _ => open = false,
        }
    }
    runs
}

fn coordinates(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sparkline of `values` (oldest first) in `colour`, with a shaded area under each run, a dot
/// on the newest value and `caption` as its tooltip.
pub(super) fn sparkline(values: &[Option<f64>], colour: &str, caption: &str) -> Markup {
    let (width, height) = SPARKLINE_SIZE;
    let runs = runs(values, width, height);
    let newest = match values.last() {
        Some(Some(_)) => runs.last().and_then(|run| run.points.last().copied()),
        _ => None,
    };
    let base = height - PAD;
    html! {
        svg.sparkline xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(caption) {
            title { (caption) }
            line x1=(PAD) y1=(base) x2=(width - PAD) y2=(base) stroke=(TRACK) stroke-width="1" {}
            @for run in &runs {
                @if let (Some(first), Some(last)) = (run.points.first(), run.points.last()) {
                    @if run.points.len() > 1 {
                        polygon fill=(colour) fill-opacity="0.14" stroke="none"
                            points=(format!("{:.1},{base:.1} {} {:.1},{base:.1}", first.0, coordinates(&run.points), last.0)) {}
                        polyline fill="none" stroke=(colour) stroke-width="1.5" stroke-linejoin="round"
                            points=(coordinates(&run.points)) {}
                    } @else {
                        circle cx=(format!("{:.1}", first.0)) cy=(format!("{:.1}", first.1)) r="1.5" fill=(colour) {}
                    }
                }
            }
            @if let Some((x, y)) = newest {
                circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2.5" fill=(colour) {}
            }
        }
    }
}

/// The colour of a utilisation: green, amber from [`UTILISATION_WARNING`], red from
/// [`UTILISATION_CRITICAL`].
pub(super) fn utilisation_colour(utilisation: f64) -> &'static str {
    if utilisation >= UTILISATION_CRITICAL {
        RED
    } else if utilisation >= UTILISATION_WARNING {
        AMBER
    } else {
        GREEN
    }
}

/// A horizontal bar filled to `utilisation` (clamped to 0..=1), coloured by threshold, with a
/// tick at `limit` (e.g. the throughput SLA's threshold) when given.
pub(super) fn utilisation_bar(utilisation: f64, limit: Option<f64>) -> Markup {
    let (width, height) = BAR_SIZE;
    let filled = (utilisation.clamp(0.0, 1.0) * width).max(if utilisation > 0.0 { 1.0 } else { 0.0 });
    let tick = limit
        .filter(|l| l.is_finite() && *l > 0.0 && *l <= 1.0)
        .map(|l| l * width);
    html! {
        svg.bar xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-hidden="true" {
            rect x="0" y="0" width=(width) height=(height) rx="3" fill=(TRACK) {}
            rect x="0" y="0" width=(format!("{filled:.1}")) height=(height) rx="3"
                fill=(utilisation_colour(utilisation)) {}
            @if let Some(x) = tick {
                line x1=(format!("{x:.1}")) y1="0" x2=(format!("{x:.1}")) y2=(height)
                    stroke="#1f2937" stroke-width="1.5" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_scale_to_the_peak_and_break_at_gaps() {
        let runs = runs(&[Some(0.0), Some(10.0), None, Some(5.0)], 100.0, 20.0);
        assert_eq!(runs.len(), 2);
        let top = 20.0 - PAD - HEADROOM * 15.0;
        assert_eq!(runs[0].points, vec![(PAD, 20.0 - PAD), (PAD + 95.0 / 3.0, top)]);
        assert_eq!(runs[1].points, vec![(100.0 - PAD, 20.0 - PAD - HEADROOM * 7.5)]);
        // All zeros lie on the base line; no values, no runs.
        let flat = super::runs(&[Some(0.0), Some(0.0)], 100.0, 20.0);
        assert!(flat[0].points.iter().all(|(_, y)| *y == 20.0 - PAD));
        assert!(super::runs(&[None, None], 100.0, 20.0).is_empty());
    }

    #[test]
    fn sparkline_draws_lines_dots_and_an_escaped_caption() {
        let svg = sparkline(&[Some(1.0), Some(3.0), None, Some(2.0)], GREEN, "peak <3>").into_string();
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        // The lone point after the gap, plus the newest-value dot.
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert!(svg.contains("<title>peak &lt;3&gt;</title>"), "{svg}");
        assert!(!svg.contains("NaN"), "{svg}");
        let gap_last = sparkline(&[Some(1.0), Some(3.0), None], GREEN, "x").into_string();
        assert_eq!(gap_last.matches("<circle").count(), 0, "{gap_last}");
    }

    #[test]
    fn bars_are_coloured_by_threshold_and_clamped() {
        assert_eq!(utilisation_colour(0.2), GREEN);
        assert_eq!(utilisation_colour(0.75), AMBER);
        assert_eq!(utilisation_colour(0.95), RED);
        let full = utilisation_bar(1.7, Some(0.8)).into_string();
        assert!(
            full.contains(r##"width="100.0" height="12" rx="3" fill="#d3452f""##),
            "{full}"
        );
        assert!(full.contains(r#"x1="80.0""#), "{full}");
        let empty = utilisation_bar(0.0, None).into_string();
        assert!(
            empty.contains(r#"width="0.0""#) && !empty.contains("<line"),
            "{empty}"
        );
    }
}
