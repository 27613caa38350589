//! Server-rendered SVG charts: a time series, horizontal bars, the setup
//! funnel, the tier mix and the overview's sparkline.
//!
//! Charts are inline SVG inside the page, so they need no script, no external
//! asset and no `style` attribute (the Content-Security-Policy forbids inline
//! styles). Colours come from CSS classes defined in `assets/dashboard.css`,
//! which switch with `prefers-color-scheme`, so one chart reads well in light
//! and dark themes. Every SVG scales to its container through its `viewBox`;
//! legends are HTML lists beside the SVG so they wrap on a narrow window.
//! Each mark carries a `<title>` with its exact value, which browsers show as
//! a tooltip, and every chart is followed on the page by the same numbers as a
//! table.
//!
//! Labels that came from a client are escaped with [`Esc`] like everywhere else.

use std::fmt::Write as _;

use telemetry_protocol::Tier;

use super::html::{Esc, num, pct, ratio, truncate};
use crate::report::TierShare;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// One bar per point.
    Bars,
    /// A line through the points.
    Line,
}

/// One named series of a chart.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// The name shown in the legend and tooltips.
    pub name: &'a str,
    /// The CSS class that colours it (`s1`, `s2`, ...).
    pub class: &'static str,
    /// How it is drawn.
    pub mark: Mark,
    /// One value per x position.
    pub values: &'a [u64],
}

/// New installs as bars and weekly active installs as a line, one point per
/// ISO week: the chart the signed-in and the public project pages share.
pub fn weekly_installs(
    x_labels: &[String],
    x_full: &[String],
    installs: &[u64],
    active: &[u64],
) -> String {
    time_chart(&TimeChart {
        title: "Installs and weekly active installs per week",
        x_title: "ISO week",
        y_title: "installs per week",
        x_labels,
        x_full,
        series: &[
            Series {
                name: "new installs",
                class: "s1",
                mark: Mark::Bars,
                values: installs,
            },
            Series {
                name: "weekly active installs",
                class: "s2",
                mark: Mark::Line,
                values: active,
            },
        ],
    })
}

/// A time-series chart: x is time, y is a count.
#[derive(Debug, Clone, Copy)]
pub struct TimeChart<'a> {
    /// The caption above the chart.
    pub title: &'a str,
    /// The x-axis title, such as "UTC day".
    pub x_title: &'a str,
    /// The y-axis title with its unit, such as "installs per day".
    pub y_title: &'a str,
    /// Short label of each x position, shown on the axis.
    pub x_labels: &'a [String],
    /// Full label of each x position, shown in tooltips.
    pub x_full: &'a [String],
    /// The series, all with one value per x position.
    pub series: &'a [Series<'a>],
}

const WIDTH: f64 = 720.0;
/// The time series is narrower than the other charts because two of them sit
/// side by side on a wide screen; a smaller viewBox keeps their text readable.
const TIME_WIDTH: f64 = 560.0;
const TIME_HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 58.0;
/// How many x labels fit under a chart without overlapping.
const MAX_X_LABELS: usize = 8;
const Y_TICKS: u64 = 4;

/// The y-axis maximum and tick step: a 1, 2 or 5 times a power of ten step,
/// so tick labels are round numbers.
pub fn y_scale(max: u64) -> (u64, u64) {
    let target = max.div_ceil(Y_TICKS).max(1);
    let mut magnitude = 1u64;
    loop {
        for m in [1, 2, 5] {
            let step = m * magnitude;
            if step >= target {
                return (step * Y_TICKS, step);
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    out.push_str("<ul class=\"legend\">");
    for (name, class) in items {
        let _ = write!(
            out,
            "<li><span class=\"swatch {class}\" aria-hidden=\"true\"></span>{}</li>",
            Esc(name)
        );
    }
    out.push_str("</ul>\n");
}

/// Renders a time-series chart as a `<figure>` with caption, SVG and legend.
pub fn time_chart(chart: &TimeChart<'_>) -> String {
    let n = chart.x_labels.len();
    let plot_w = TIME_WIDTH - LEFT - RIGHT;
    let plot_h = TIME_HEIGHT - TOP - BOTTOM;
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0);
    let (y_max, step) = y_scale(max);
    let y_of = |v: u64| TOP + plot_h - (v as f64 / y_max as f64) * plot_h;
    let slot = plot_w / n.max(1) as f64;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);

    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\">\n<figcaption>{}</figcaption>\n\
         <svg viewBox=\"0 0 {TIME_WIDTH} {TIME_HEIGHT}\" role=\"img\" aria-label=\"{}: {} by {}\">\n",
        Esc(chart.title),
        Esc(chart.title),
        Esc(chart.y_title),
        Esc(chart.x_title),
    );
    // Grid lines and y tick labels.
    for i in 0..=Y_TICKS {
        let v = step * i;
        let y = y_of(v);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 8.0,
            y + 4.0,
            num(v)
        );
    }
    // Axis titles.
    let _ = write!(
        out,
        "<text class=\"axis-title\" transform=\"rotate(-90)\" x=\"{:.1}\" y=\"16\" \
         text-anchor=\"middle\">{}</text>\n\
         <text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        -(TOP + plot_h / 2.0),
        Esc(chart.y_title),
        LEFT + plot_w / 2.0,
        TIME_HEIGHT - 8.0,
        Esc(chart.x_title),
    );
    if n == 0 {
        let _ = writeln!(
            out,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">No data in this range</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    // X labels, thinned so they never overlap.
    let every = n.div_ceil(MAX_X_LABELS).max(1);
    for (i, label) in chart.x_labels.iter().enumerate() {
        if i % every == 0 {
            let _ = writeln!(
                out,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x_of(i),
                TOP + plot_h + 18.0,
                Esc(label)
            );
        }
    }
    let full = |i: usize| {
        chart
            .x_full
            .get(i)
            .or(chart.x_labels.get(i))
            .map_or("", String::as_str)
    };
    // Bars first, so lines are drawn over them.
    let bars: Vec<&Series<'_>> = chart
        .series
        .iter()
        .filter(|s| s.mark == Mark::Bars)
        .collect();
    let bar_w = slot * 0.72 / bars.len().max(1) as f64;
    for (b, series) in bars.iter().enumerate() {
        for (i, &v) in series.values.iter().enumerate().take(n) {
            let x = x_of(i) - slot * 0.36 + bar_w * b as f64;
            let y = y_of(v);
            let _ = writeln!(
                out,
                "<rect class=\"bar {}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\">\
                 <title>{}: {} {}</title></rect>",
                series.class,
                (TOP + plot_h - y).max(0.0),
                Esc(full(i)),
                num(v),
                Esc(series.name)
            );
        }
    }
    for series in chart.series.iter().filter(|s| s.mark == Mark::Line) {
        let points: Vec<String> = series
            .values
            .iter()
            .enumerate()
            .take(n)
            .map(|(i, &v)| format!("{:.1},{:.1}", x_of(i), y_of(v)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline class=\"line {}\" fill=\"none\" points=\"{}\"/>",
            series.class,
            points.join(" ")
        );
        // Dots make single points visible and give each value a tooltip.
        for (i, &v) in series.values.iter().enumerate().take(n) {
            let _ = writeln!(
                out,
                "<circle class=\"dot {}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\">\
                 <title>{}: {} {}</title></circle>",
                series.class,
                x_of(i),
                y_of(v),
                Esc(full(i)),
                num(v),
                Esc(series.name)
            );
        }
    }
    // The axes themselves.
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\n</svg>\n",
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h
    );
    let items: Vec<(&str, &str)> = chart.series.iter().map(|s| (s.name, s.class)).collect();
    legend(&mut out, &items);
    out.push_str("</figure>\n");
    out
}

/// Horizontal grouped bars: one row per label, one bar per series.
///
/// `series` names each value of a row and its CSS class; `unit` is appended to
/// the axis note.
pub fn bar_rows(
    title: &str,
    unit: &str,
    series: &[(&str, &'static str)],
    rows: &[(String, Vec<u64>)],
) -> String {
    // Narrower than the time series: breakdowns sit three to a row on a wide
    // screen, and a smaller viewBox keeps their text readable there.
    const WIDTH: f64 = 380.0;
    const LABEL_W: f64 = 104.0;
    const ROW_H: f64 = 16.0;
    const ROW_GAP: f64 = 10.0;
    const VALUE_W: f64 = 52.0;
    let per_row = ROW_H * series.len().max(1) as f64 + ROW_GAP;
    let height = (per_row * rows.len().max(1) as f64 + 28.0).ceil();
    let bar_room = WIDTH - LABEL_W - VALUE_W;
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\">\n<figcaption>{}</figcaption>\n\
         <svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{} ({})\">\n",
        Esc(title),
        Esc(title),
        Esc(unit)
    );
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "<text class=\"empty\" x=\"{:.1}\" y=\"20\" text-anchor=\"middle\">No data in this range</text>",
            WIDTH / 2.0
        );
    }
    for (r, (label, values)) in rows.iter().enumerate() {
        let y0 = 4.0 + per_row * r as f64;
        let mid = y0 + ROW_H * series.len() as f64 / 2.0;
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            LABEL_W - 8.0,
            mid + 4.0,
            Esc(label),
            Esc(&truncate(label, 14))
        );
        for (s, (name, class)) in series.iter().enumerate() {
            let v = values.get(s).copied().unwrap_or(0);
            let w = (v as f64 / max as f64 * bar_room).max(if v > 0 { 1.0 } else { 0.0 });
            let y = y0 + ROW_H * s as f64;
            let _ = writeln!(
                out,
                "<rect class=\"bar {class}\" x=\"{LABEL_W}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\">\
                 <title>{}: {} {}</title></rect>\
                 <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                ROW_H - 3.0,
                Esc(label),
                num(v),
                Esc(name),
                LABEL_W + w + 6.0,
                y + ROW_H - 5.0,
                num(v)
            );
        }
    }
    let _ = write!(
        out,
        "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n</svg>\n",
        LABEL_W + bar_room / 2.0,
        height - 6.0,
        Esc(unit)
    );
    legend(&mut out, series);
    out.push_str("</figure>\n");
    out
}

/// The setup funnel: installs, then setup started, then setup completed, each
/// bar labelled with its count and its conversion from the step before.
pub fn funnel(installs: u64, started: u64, completed: u64) -> String {
    const LABEL_W: f64 = 150.0;
    const ROW_H: f64 = 40.0;
    const VALUE_W: f64 = 230.0;
    let steps = [
        ("Installs", "s1", installs, None),
        (
            "Setup started",
            "s2",
            started,
            Some(ratio(started, installs)),
        ),
        (
            "Setup completed",
            "s3",
            completed,
            Some(ratio(completed, started)),
        ),
    ];
    let max = installs.max(started).max(completed).max(1);
    let bar_room = WIDTH - LABEL_W - VALUE_W;
    let height = ROW_H * steps.len() as f64 + 8.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\">\n<figcaption>Setup funnel</figcaption>\n\
         <svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"Setup funnel: {} installs, \
         {} setup started, {} setup completed\">\n",
        num(installs),
        num(started),
        num(completed)
    );
    for (i, (name, class, value, conversion)) in steps.iter().enumerate() {
        let y = 4.0 + ROW_H * i as f64;
        let w = (*value as f64 / max as f64 * bar_room).max(if *value > 0 { 1.0 } else { 0.0 });
        let note = match conversion {
            None => String::new(),
            Some(r) => format!(" · {} of previous step", pct(*r)),
        };
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{name}</text>\
             <rect class=\"bar {class}\" x=\"{LABEL_W}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\">\
             <title>{name}: {}</title></rect>\
             <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}{note}</text>",
            LABEL_W - 8.0,
            y + ROW_H / 2.0 + 2.0,
            ROW_H - 12.0,
            num(*value),
            LABEL_W + w + 6.0,
            y + ROW_H / 2.0 + 2.0,
            num(*value),
        );
    }
    out.push_str("</svg>\n</figure>\n");
    out
}

/// The CSS class that colours a tier.
pub fn tier_class(tier: Tier) -> &'static str {
    match tier {
        Tier::Off => "t-off",
        Tier::Aggregate => "t-aggregate",
        Tier::Anonymous => "t-anonymous",
        Tier::Full => "t-full",
    }
}

/// The tier mix as one stacked bar of 100%, with an HTML legend giving counts and shares.
pub fn tier_mix(tiers: &[TierShare]) -> String {
    const HEIGHT: f64 = 36.0;
    let total: u64 = tiers.iter().map(|t| t.events).sum();
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\">\n<figcaption>Tier mix (events received at each tier)</figcaption>\n\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"Tier mix of {} events\">\n",
        num(total)
    );
    if total == 0 {
        let _ = writeln!(
            out,
            "<rect class=\"track\" x=\"0\" y=\"4\" width=\"{WIDTH}\" height=\"28\"/>"
        );
    }
    let mut x = 0.0;
    for share in tiers.iter().filter(|t| t.events > 0) {
        let w = share.events as f64 / total as f64 * WIDTH;
        let _ = writeln!(
            out,
            "<rect class=\"bar {}\" x=\"{x:.1}\" y=\"4\" width=\"{w:.1}\" height=\"28\">\
             <title>{}: {} events ({})</title></rect>",
            tier_class(share.tier),
            share.tier,
            num(share.events),
            pct(ratio(share.events, total))
        );
        x += w;
    }
    out.push_str("</svg>\n<ul class=\"legend\">");
    for share in tiers {
        let _ = write!(
            out,
            "<li><span class=\"swatch {}\" aria-hidden=\"true\"></span>{}: {} ({})</li>",
            tier_class(share.tier),
            share.tier,
            num(share.events),
            pct(ratio(share.events, total))
        );
    }
    out.push_str("</ul>\n</figure>\n");
    out
}

/// A small trend line for the overview, without axes.
pub fn sparkline(values: &[u64], label: &str) -> String {
    const W: f64 = 120.0;
    const H: f64 = 32.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    // Two units of padding keep the line's stroke inside the box.
    let step = if values.len() > 1 {
        (W - 4.0) / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            format!(
                "{:.1},{:.1}",
                2.0 + step * i as f64,
                H - 2.0 - v as f64 / max as f64 * (H - 4.0)
            )
        })
        .collect();
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">\
         <title>{}</title><line class=\"grid\" x1=\"0\" x2=\"{W}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
         <polyline class=\"line s1\" fill=\"none\" points=\"{}\"/></svg>",
        Esc(label),
        Esc(label),
        H - 2.0,
        H - 2.0,
        points.join(" ")
    )
}

/// The CSS class of the `i`th stacked area; `other` gets its own grey.
pub fn area_class(i: usize, other: bool) -> &'static str {
    const CLASSES: [&str; 10] = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"];
    if other {
        "a-other"
    } else {
        CLASSES[i % CLASSES.len()]
    }
}

/// One band of a [`stacked_shares`] chart.
#[derive(Debug, Clone, Copy)]
pub struct ShareBand<'a> {
    /// The name shown in the legend and tooltips.
    pub name: &'a str,
    /// Its CSS class, from [`area_class`].
    pub class: &'static str,
    /// Its share of each x position's total, `None` where the total is zero.
    pub shares: &'a [Option<f64>],
    /// The counts behind the shares, for the tooltips.
    pub counts: &'a [u64],
}

/// A stacked area chart of shares (0 to 100%), one band per series, the
/// first at the bottom. Each band is one `<polygon>` with a `<title>`
/// listing its share at every x position; the page adds the table.
pub fn stacked_shares(
    title: &str,
    x_title: &str,
    x_labels: &[String],
    x_full: &[String],
    bands: &[ShareBand<'_>],
) -> String {
    let n = x_labels.len();
    let plot_w = TIME_WIDTH - LEFT - RIGHT;
    let plot_h = TIME_HEIGHT - TOP - BOTTOM;
    let y_of = |share: f64| TOP + plot_h - share.clamp(0.0, 1.0) * plot_h;
    // One x position spans the whole width, so a single week is still an area.
    let x_of = |i: usize| {
        if n <= 1 {
            if i == 0 { LEFT } else { LEFT + plot_w }
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\">\n<figcaption>{}</figcaption>\n\
         <svg viewBox=\"0 0 {TIME_WIDTH} {TIME_HEIGHT}\" role=\"img\" aria-label=\"{}: share of active installs by {}\">\n",
        Esc(title),
        Esc(title),
        Esc(x_title),
    );
    for i in 0..=Y_TICKS {
        let share = i as f64 / Y_TICKS as f64;
        let y = y_of(share);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            LEFT + plot_w,
            LEFT - 8.0,
            y + 4.0,
            (share * 100.0).round()
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis-title\" transform=\"rotate(-90)\" x=\"{:.1}\" y=\"16\" \
         text-anchor=\"middle\">share of active installs</text>\n\
         <text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        -(TOP + plot_h / 2.0),
        LEFT + plot_w / 2.0,
        TIME_HEIGHT - 8.0,
        Esc(x_title),
    );
    let has_data = bands.iter().any(|b| b.shares.iter().any(Option::is_some));
    if n == 0 || !has_data {
        let _ = writeln!(
            out,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">No data in this range</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    let every = n.div_ceil(MAX_X_LABELS).max(1);
    for (i, label) in x_labels.iter().enumerate() {
        if i % every == 0 {
            let x = if n <= 1 { LEFT + plot_w / 2.0 } else { x_of(i) };
            let _ = writeln!(
                out,
                "<text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + plot_h + 18.0,
                Esc(label)
            );
        }
    }
    if has_data {
        // Positions of the x axis: a single week is drawn from edge to edge.
        let xs: Vec<(usize, f64)> = if n <= 1 {
            vec![(0, x_of(0)), (0, x_of(1))]
        } else {
            (0..n).map(|i| (i, x_of(i))).collect()
        };
        let mut below = vec![0.0f64; n.max(1)];
        for band in bands {
            let share = |i: usize| band.shares.get(i).copied().flatten().unwrap_or(0.0);
            let top: Vec<String> = xs
                .iter()
                .map(|&(i, x)| format!("{x:.1},{:.1}", y_of(below[i] + share(i))))
                .collect();
            let bottom: Vec<String> = xs
                .iter()
                .rev()
                .map(|&(i, x)| format!("{x:.1},{:.1}", y_of(below[i])))
                .collect();
            let detail: Vec<String> = (0..n)
                .map(|i| {
                    let label = x_full.get(i).or(x_labels.get(i)).map_or("", String::as_str);
                    format!(
                        "{}: {} ({})",
                        label,
                        pct(band.shares.get(i).copied().flatten()),
                        num(band.counts.get(i).copied().unwrap_or(0))
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<polygon class=\"area {}\" points=\"{} {}\"><title>{}: {}</title></polygon>",
                band.class,
                top.join(" "),
                bottom.join(" "),
                Esc(band.name),
                Esc(&detail.join("; "))
            );
            for (i, b) in below.iter_mut().enumerate() {
                *b += share(i);
            }
        }
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\n</svg>\n",
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h
    );
    let items: Vec<(&str, &str)> = bands.iter().map(|b| (b.name, b.class)).collect();
    legend(&mut out, &items);
    out.push_str("</figure>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_shares_draw_one_area_per_band_with_escaped_names() {
        let labels: Vec<String> = vec!["W46".into(), "W47".into()];
        let a = [Some(0.25), Some(0.5)];
        let b = [Some(0.75), Some(0.5)];
        let html = stacked_shares(
            "Version adoption",
            "ISO week",
            &labels,
            &labels,
            &[
                ShareBand {
                    name: "1.0",
                    class: area_class(0, false),
                    shares: &a,
                    counts: &[1, 2],
                },
                ShareBand {
                    name: "<b>",
                    class: area_class(0, true),
                    shares: &b,
                    counts: &[3, 2],
                },
            ],
        );
        assert_eq!(html.matches("<polygon").count(), 2);
        assert!(html.contains("<title>&lt;b&gt;: W46: 75.0% (3); W47: 50.0% (2)</title>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("class=\"area a-other\""));
        // The top band reaches 100% (y = TOP) everywhere.
        assert!(html.contains(&format!(",{TOP:.1} ")));
        let empty = stacked_shares("t", "ISO week", &labels, &labels, &[]);
        assert!(empty.contains("No data in this range"));
    }

    #[test]
    fn y_scale_rounds_up_to_round_ticks() {
        let table = [
            (0, (4, 1)),
            (1, (4, 1)),
            (4, (4, 1)),
            (5, (8, 2)),
            (9, (20, 5)),
            (37, (40, 10)),
            (41, (80, 20)),
            (1234, (2000, 500)),
        ];
        for (max, expected) in table {
            assert_eq!(y_scale(max), expected, "{max}");
        }
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn time_chart_draws_one_bar_per_point_with_exact_tooltips() {
        let x = labels(3);
        let chart = time_chart(&TimeChart {
            title: "Installs",
            x_title: "UTC day",
            y_title: "installs per day",
            x_labels: &x,
            x_full: &x,
            series: &[Series {
                name: "installs",
                class: "s1",
                mark: Mark::Bars,
                values: &[3, 0, 1234],
            }],
        });
        assert_eq!(chart.matches("<rect class=\"bar s1\"").count(), 3);
        assert!(chart.contains("<title>d2: 1,234 installs</title>"));
        assert!(chart.contains(">installs per day</text>"));
        assert!(chart.contains(">UTC day</text>"));
        assert!(chart.contains("<li><span class=\"swatch s1\""));
        // The top tick is the rounded maximum.
        assert!(chart.contains(">2,000</text>"));
    }

    #[test]
    fn time_chart_thins_x_labels_and_survives_no_data() {
        let x = labels(90);
        let values = vec![1; 90];
        let chart = time_chart(&TimeChart {
            title: "t",
            x_title: "x",
            y_title: "y",
            x_labels: &x,
            x_full: &x,
            series: &[Series {
                name: "a",
                class: "s2",
                mark: Mark::Line,
                values: &values,
            }],
        });
        let shown = x
            .iter()
            .filter(|l| chart.contains(&format!(">{l}</text>")))
            .count();
        assert!(shown <= MAX_X_LABELS, "{shown} labels");
        assert_eq!(chart.matches("<circle").count(), 90);
        let empty = time_chart(&TimeChart {
            title: "t",
            x_title: "x",
            y_title: "y",
            x_labels: &[],
            x_full: &[],
            series: &[],
        });
        assert!(empty.contains("No data in this range"));
    }

    #[test]
    fn hostile_labels_are_escaped_in_svg() {
        let hostile = "<script>alert(1)</script>";
        let chart = bar_rows(
            "Versions",
            "installs",
            &[("installs", "s1")],
            &[(hostile.to_owned(), vec![5])],
        );
        assert!(!chart.contains("<script>"));
        assert!(chart.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn funnel_shows_conversion_from_the_previous_step() {
        let svg = funnel(10, 8, 6);
        assert!(svg.contains(">10</text>"));
        assert!(svg.contains("8 · 80.0% of previous step"));
        assert!(svg.contains("6 · 75.0% of previous step"));
        assert!(funnel(0, 0, 0).contains("0 · — of previous step"));
    }

    #[test]
    fn tier_mix_shares_add_up() {
        let svg = tier_mix(&[
            TierShare {
                tier: Tier::Aggregate,
                events: 3,
            },
            TierShare {
                tier: Tier::Full,
                events: 1,
            },
        ]);
        assert!(svg.contains("aggregate: 3 (75.0%)"));
        assert!(svg.contains("full: 1 (25.0%)"));
    }

    #[test]
    fn sparkline_has_one_point_per_value() {
        let svg = sparkline(&[0, 2, 4], "installs");
        assert!(
            svg.contains("points=\"2.0,30.0 60.0,16.0 118.0,2.0\""),
            "{svg}"
        );
    }
}
