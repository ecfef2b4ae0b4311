//! Line charts as inline SVG, drawn here so the report needs no script, library or network: axes
//! with round ticks, a linear or logarithmic y axis, gaps where a series has no value, horizontal
//! reference lines (an SLO) and vertical markers (ramp steps, a tipping point).

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub colour: &'static str,
    /// x and y; None is a gap in the line (e.g. a second without answers).
    pub points: Vec<(f64, Option<f64>)>,
    /// Dots on the points as well (few points, e.g. one per ramp step).
    pub dots: bool,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_y: bool,
    /// y value, label: a dashed line across (an objective).
    pub levels: Vec<(f64, String)>,
    /// x value, label: a thin line from top to bottom (a step start, a tipping point).
    pub marks: Vec<(f64, String)>,
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 46.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

/// A round step (1, 2 or 5 × 10^k) giving about `count` intervals over `range`.
fn round_step(range: f64, count: f64) -> f64 {
    let raw = (range / count).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().find(|m| m * magnitude >= raw).unwrap_or(10.0);
    step * magnitude
}

/// A tick label: no needless decimals, thousands as "k".
fn tick_label(value: f64) -> String {
    let text = if value.abs() >= 10_000.0 { format!("{}k", trim(value / 1000.0)) } else { trim(value) };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

struct Scale {
    min: f64,
    max: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Scale {
    fn at(&self, value: f64) -> f64 {
        let (value, min, max) = if self.log {
            (value.max(self.min).log10(), self.min.log10(), self.max.log10())
        } else {
            (value, self.min, self.max)
        };
        let span = if max > min { max - min } else { 1.0 };
        self.from + (value - min) / span * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut ticks = Vec::new();
            let mut decade = self.min;
            while decade <= self.max * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    let tick = decade * m;
                    if tick >= self.min * 0.9999 && tick <= self.max * 1.0001 {
                        ticks.push(tick);
                    }
                }
                decade *= 10.0;
            }
            ticks
        } else {
            let step = round_step(self.max - self.min, 5.0);
            let mut ticks = Vec::new();
            let mut tick = (self.min / step).ceil() * step;
            while tick <= self.max + step * 1e-9 && ticks.len() < 50 {
                ticks.push(tick);
                tick += step;
            }
            ticks
        }
    }
}

pub fn line_chart(chart: &Chart) -> String {
    let xs = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(chart.marks.iter().map(|m| m.0));
    let (mut x_min, mut x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if !x_min.is_finite() {
        (x_min, x_max) = (0.0, 1.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let ys: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .chain(chart.levels.iter().map(|l| l.0))
        .filter(|y| y.is_finite() && (!chart.log_y || *y > 0.0))
        .collect();
    let y_scale = if chart.log_y {
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 10.0) };
        let min = 10f64.powf(lo.log10().floor());
        let max = 10f64.powf(hi.log10().ceil()).max(min * 10.0);
        Scale { min, max, log: true, from: HEIGHT - BOTTOM, to: TOP }
    } else {
        let hi = ys.iter().copied().fold(0.0, f64::max);
        let step = round_step(if hi > 0.0 { hi } else { 1.0 }, 5.0);
        let max = ((hi / step).ceil() * step).max(step);
        Scale { min: 0.0, max, log: false, from: HEIGHT - BOTTOM, to: TOP }
    };
    let x_scale = Scale { min: x_min, max: x_max, log: false, from: LEFT, to: WIDTH - RIGHT };

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}" font-family="sans-serif" font-size="11">"#,
        title = escape(&chart.title)
    );
    let _ = write!(svg, r#"<text x="{LEFT}" y="16" font-size="14" font-weight="bold">{}</text>"#, escape(&chart.title));
    // Legend under the title, left to right.
    let mut legend_x = LEFT;
    for series in &chart.series {
        let _ = write!(
            svg,
            r#"<rect x="{legend_x}" y="24" width="14" height="4" fill="{c}"/><text x="{}" y="30">{}</text>"#,
            legend_x + 18.0,
            escape(&series.name),
            c = series.colour
        );
        legend_x += 30.0 + 6.5 * series.name.chars().count() as f64;
    }
    // Grid and ticks.
    for tick in y_scale.ticks() {
        let y = y_scale.at(tick);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(tick)
        );
    }
    for tick in x_scale.ticks() {
        let x = x_scale.at(tick);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#888"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 5.0,
            HEIGHT - BOTTOM + 18.0,
            tick_label(tick)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        WIDTH - RIGHT - LEFT,
        HEIGHT - BOTTOM - TOP
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(&chart.x_label)
    );
    let _ = write!(
        svg,
        r#"<text x="14" y="{y}" text-anchor="middle" transform="rotate(-90 14 {y})">{}</text>"#,
        escape(&chart.y_label),
        y = (TOP + HEIGHT - BOTTOM) / 2.0
    );
    for (x, label) in &chart.marks {
        let x = x_scale.at(*x);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#999" stroke-dasharray="2 3"/><text x="{:.1}" y="{}" fill="#555">{}</text>"##,
            HEIGHT - BOTTOM,
            x + 3.0,
            TOP + 11.0,
            escape(label)
        );
    }
    for (y, label) in &chart.levels {
        let y = y_scale.at(*y);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#c00" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="#c00" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            y - 4.0,
            escape(label)
        );
    }
    for series in &chart.series {
        let mut path = String::new();
        let mut pen_down = false;
        for &(x, y) in &series.points {
            match y.filter(|y| y.is_finite()) {
                Some(y) => {
                    let _ =
                        write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x_scale.at(x), y_scale.at(y));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(
                svg,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round"/>"#,
                path.trim_end(),
                series.colour
            );
        }
        if series.dots {
            for &(x, y) in &series.points {
                if let Some(y) = y.filter(|y| y.is_finite()) {
                    let _ = write!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                        x_scale.at(x),
                        y_scale.at(y),
                        series.colour
                    );
                }
            }
        }
    }
    svg += "</svg>";
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_steps_are_one_two_five() {
        assert_eq!(round_step(100.0, 5.0), 20.0);
        assert_eq!(round_step(7.0, 5.0), 2.0);
        assert_eq!(round_step(0.9, 5.0), 0.2);
        assert_eq!(round_step(3000.0, 5.0), 1000.0);
    }

    #[test]
    fn tick_labels_drop_needless_decimals() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.2), "0.2");
        assert_eq!(tick_label(20_000.0), "20k");
    }

    #[test]
    fn a_chart_escapes_its_text_and_breaks_lines_at_gaps() {
        let chart = Chart {
            title: "p99 <by> \"rate\"".into(),
            x_label: "s".into(),
            y_label: "ms".into(),
            series: vec![Series {
                name: "p99".into(),
                colour: "#000",
                points: vec![(0.0, Some(1.0)), (1.0, None), (2.0, Some(100.0)), (3.0, Some(1000.0))],
                dots: false,
            }],
            log_y: true,
            levels: vec![(500.0, "SLO".into())],
            marks: vec![],
        };
        let svg = line_chart(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("p99 &lt;by&gt; &quot;rate&quot;"));
        assert!(!svg.contains("<by>"));
        // Two pieces of line: one point, then a gap, then two.
        let path = svg.split("<path d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert_eq!(path.matches('L').count(), 1, "{path}");
    }
}
