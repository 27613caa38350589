//! The signed-in pages: the overview of every project, one project's page and
//! the sign-in form. Pure functions from report types to HTML, so they are
//! tested without a server.

use std::fmt::Write as _;

use telemetry_protocol::{Day, IsoWeek};

use super::charts::{self, Mark, Series, ShareBand, TimeChart};
use super::html::{Chrome, Esc, esc, num, page, pct, ratio, url_component};
use super::range::{Granularity, Range};
use crate::export::CsvTable;
use crate::report::{Breakdown, Cohort, DeliveryHealth, OTHER, ProjectStats, PropBreakdown};
use crate::store::RefusalRow;

/// How many rows a breakdown chart shows before folding the rest into "other".
pub const TOP_ROWS: usize = 10;

/// One row of the overview, computed from a [`ProjectStats`] over the last 30 days.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSummary {
    /// The project name.
    pub project: String,
    /// Installs over the last 7 days, today included.
    pub installs_7d: u64,
    /// Installs over the last 30 days, today included.
    pub installs_30d: u64,
    /// Installs of all time.
    pub installs_all_time: u64,
    /// Weekly active installs in the current ISO week.
    pub active_installs: u64,
    /// Setup completed over setup started in the last 30 days.
    pub setup_completion_rate: Option<f64>,
    /// Installs per day over the last 30 days, oldest first, for the trend line.
    pub daily_installs: Vec<u64>,
}

impl ProjectSummary {
    /// Summarizes stats whose window is the last 30 days ending today.
    pub fn from_stats(stats: &ProjectStats) -> ProjectSummary {
        let week_start = stats.to.add_days(-6);
        ProjectSummary {
            project: stats.project.clone(),
            installs_7d: stats
                .daily
                .iter()
                .filter(|d| d.day >= week_start)
                .map(|d| d.installs)
                .sum(),
            installs_30d: stats.installs,
            installs_all_time: stats.installs_all_time,
            active_installs: stats.active_installs,
            setup_completion_rate: stats.setup_completion_rate,
            daily_installs: stats.daily.iter().map(|d| d.installs).collect(),
        }
    }
}

/// The URL of one CSV export of `project` over `range`.
pub fn export_href(project: &str, table: CsvTable, range: &Range) -> String {
    format!(
        "/dashboard/projects/{}/export/{}.csv?from={}&to={}",
        url_component(project),
        table.as_str(),
        range.from,
        range.to
    )
}

/// The link to a project's page.
pub fn project_href(project: &str) -> String {
    format!("/dashboard/projects/{}", url_component(project))
}

/// The overview page: every project with its headline numbers and a trend line.
pub fn render_overview(projects: &[ProjectSummary], today: Day) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Projects</h1>\n<p class=\"sub\">Last 7 and 30 days end today, {today} (UTC). \
         Weekly active installs count the current ISO week, {}.</p>\n",
        today.iso_week()
    );
    if projects.is_empty() {
        body.push_str(
            "<p class=\"message\">No project has sent data yet. Point a tool at \
             <code>POST /v1/ingest</code> and its numbers appear here.</p>\n",
        );
        return page("Projects", Chrome::Admin, &body);
    }
    body.push_str(
        "<div class=\"table-scroll\"><table class=\"overview\">\n<thead><tr>\
         <th scope=\"col\">Project</th><th scope=\"col\" class=\"n\">Installs, 7 days</th>\
         <th scope=\"col\" class=\"n\">Installs, 30 days</th><th scope=\"col\" class=\"n\">Installs, all time</th>\
         <th scope=\"col\" class=\"n\">Weekly active installs</th><th scope=\"col\" class=\"n\">Setup completion</th>\
         <th scope=\"col\">Installs per day, 30 days</th></tr></thead>\n<tbody>\n",
    );
    for p in projects {
        let _ = writeln!(
            body,
            "<tr data-project=\"{name}\"><th scope=\"row\"><a href=\"{href}\">{name}</a></th>\
             <td class=\"n installs-7d\">{}</td><td class=\"n installs-30d\">{}</td>\
             <td class=\"n installs-all\">{}</td><td class=\"n active\">{}</td>\
             <td class=\"n completion\">{}</td><td class=\"trend\">{}</td></tr>",
            num(p.installs_7d),
            num(p.installs_30d),
            num(p.installs_all_time),
            num(p.active_installs),
            pct(p.setup_completion_rate),
            charts::sparkline(
                &p.daily_installs,
                &format!(
                    "{}: {} installs over 30 days",
                    p.project,
                    num(p.installs_30d)
                )
            ),
            name = Esc(&p.project),
            href = esc(&project_href(&p.project)),
        );
    }
    body.push_str("</tbody></table></div>\n");
    page("Projects", Chrome::Admin, &body)
}

fn short_day(day: Day) -> String {
    let (_, m, d) = day.ymd();
    format!("{m:02}-{d:02}")
}

fn week_monday(week: IsoWeek) -> Option<Day> {
    // 4 January is always in week 1, so its week's Monday anchors the year.
    let jan4 = Day::from_ymd(week.year, 1, 4)?;
    Some(jan4.week_start().add_days(7 * (week.week as i32 - 1)))
}

fn week_full(week: IsoWeek) -> String {
    match week_monday(week) {
        Some(monday) => format!("{week} (week of {monday})"),
        None => week.to_string(),
    }
}

fn range_form(project: &str, range: &Range) -> String {
    let href = esc(&project_href(project));
    let mut out = String::new();
    let _ = write!(
        out,
        "<form method=\"get\" action=\"{href}\" class=\"range\">\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label>\
         <label>Per <select name=\"by\">",
        range.from, range.to
    );
    for by in [Granularity::Day, Granularity::Week] {
        let selected = if by == range.by { " selected" } else { "" };
        let _ = write!(
            out,
            "<option value=\"{0}\"{selected}>{0}</option>",
            by.as_str()
        );
    }
    out.push_str("</select></label><button type=\"submit\">Show</button>");
    out.push_str("<span class=\"quick\">");
    for days in [7, 30, 90, 365] {
        let from = range.to.add_days(1 - days);
        let _ = write!(
            out,
            "<a href=\"{href}?from={from}&amp;to={}\">{days} days</a> ",
            range.to
        );
    }
    out.push_str("</span></form>\n");
    out
}

fn kpi(out: &mut String, id: &str, label: &str, value: &str, note: &str) {
    let _ = writeln!(
        out,
        "<div class=\"kpi\"><div class=\"kpi-label\">{label}</div>\
         <div class=\"kpi-value\" id=\"{id}\">{value}</div><div class=\"kpi-note\">{note}</div></div>"
    );
}

fn time_series(stats: &ProjectStats, range: &Range) -> String {
    let mut out = String::from("<div class=\"cols\">\n");
    match range.by {
        Granularity::Day => {
            let x: Vec<String> = stats.daily.iter().map(|d| short_day(d.day)).collect();
            let full: Vec<String> = stats.daily.iter().map(|d| d.day.to_string()).collect();
            let installs: Vec<u64> = stats.daily.iter().map(|d| d.installs).collect();
            out.push_str(&charts::time_chart(&TimeChart {
                title: "Installs per day",
                x_title: "UTC day",
                y_title: "installs per day",
                x_labels: &x,
                x_full: &full,
                series: &[Series {
                    name: "installs",
                    class: "s1",
                    mark: Mark::Bars,
                    values: &installs,
                }],
            }));
            let wx: Vec<String> = stats
                .weekly
                .iter()
                .map(|w| format!("W{:02}", w.week.week))
                .collect();
            let wfull: Vec<String> = stats.weekly.iter().map(|w| week_full(w.week)).collect();
            let active: Vec<u64> = stats.weekly.iter().map(|w| w.active_installs).collect();
            out.push_str(&charts::time_chart(&TimeChart {
                title: "Weekly active installs",
                x_title: "ISO week",
                y_title: "active installs per week",
                x_labels: &wx,
                x_full: &wfull,
                series: &[Series {
                    name: "weekly active installs",
                    class: "s2",
                    mark: Mark::Line,
                    values: &active,
                }],
            }));
        }
        Granularity::Week => {
            let x: Vec<String> = stats
                .weekly
                .iter()
                .map(|w| format!("W{:02}", w.week.week))
                .collect();
            let full: Vec<String> = stats.weekly.iter().map(|w| week_full(w.week)).collect();
            let installs: Vec<u64> = stats.weekly.iter().map(|w| w.installs).collect();
            let active: Vec<u64> = stats.weekly.iter().map(|w| w.active_installs).collect();
            out.push_str(&charts::weekly_installs(&x, &full, &installs, &active));
        }
    }
    out.push_str("</div>\n");
    out
}

/// The rows a breakdown chart shows: the top [`TOP_ROWS`], then one "other" row.
pub fn top_rows(rows: &[Breakdown]) -> Vec<(String, Vec<u64>)> {
    let mut out: Vec<(String, Vec<u64>)> = rows
        .iter()
        .take(TOP_ROWS)
        .map(|b| (b.key.clone(), vec![b.installs, b.active_installs]))
        .collect();
    if rows.len() > TOP_ROWS {
        let rest = &rows[TOP_ROWS..];
        out.push((
            format!("{} others", rest.len()),
            vec![
                rest.iter().map(|b| b.installs).sum(),
                rest.iter().map(|b| b.active_installs).sum(),
            ],
        ));
    }
    out
}

fn breakdown(out: &mut String, id: &str, title: &str, rows: &[Breakdown]) {
    let _ = writeln!(out, "<section class=\"breakdown\" id=\"{id}\">");
    out.push_str(&charts::bar_rows(
        title,
        "installs",
        &[("new installs", "s1"), ("weekly active installs", "s2")],
        &top_rows(rows),
    ));
    let _ = write!(
        out,
        "<details><summary>All {} as a table</summary><div class=\"table-scroll\"><table>\
         <thead><tr><th scope=\"col\">{}</th><th scope=\"col\" class=\"n\">New installs</th>\
         <th scope=\"col\" class=\"n\">Weekly active installs</th></tr></thead><tbody>",
        rows.len(),
        Esc(title)
    );
    for b in rows {
        let _ = write!(
            out,
            "<tr><td class=\"key\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            Esc(&b.key),
            num(b.installs),
            num(b.active_installs)
        );
    }
    out.push_str("</tbody></table></div></details>\n</section>\n");
}

fn heat_class(r: Option<f64>) -> &'static str {
    match r {
        None => "heat-none",
        Some(r) if r >= 0.8 => "heat-5",
        Some(r) if r >= 0.6 => "heat-4",
        Some(r) if r >= 0.4 => "heat-3",
        Some(r) if r >= 0.2 => "heat-2",
        Some(r) if r > 0.0 => "heat-1",
        Some(_) => "heat-0",
    }
}

/// The retention table: one row per install-week cohort, one column per week after.
pub fn retention_table(cohorts: &[Cohort]) -> String {
    let weeks = cohorts.iter().map(|c| c.retained.len()).max().unwrap_or(0);
    let mut out = String::from(
        "<div class=\"table-scroll\"><table class=\"retention\"><thead><tr>\
         <th scope=\"col\">Install week</th><th scope=\"col\" class=\"n\">Installs</th>",
    );
    for w in 0..weeks {
        let _ = write!(out, "<th scope=\"col\" class=\"n\">Week {w}</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    for c in cohorts {
        let _ = write!(
            out,
            "<tr><th scope=\"row\" title=\"{}\">{}</th><td class=\"n\">{}</td>",
            esc(&week_full(c.week)),
            c.week,
            num(c.installs)
        );
        for w in 0..weeks {
            match c.retained.get(w) {
                Some(&n) => {
                    let r = ratio(n, c.installs);
                    let _ = write!(
                        out,
                        "<td class=\"n {}\" title=\"{} of {} installs\">{}</td>",
                        heat_class(r),
                        num(n),
                        num(c.installs),
                        pct(r)
                    );
                }
                None => out.push_str("<td class=\"n heat-none\"></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// One project's page over `range`.
pub fn render_project(stats: &ProjectStats, range: &Range) -> String {
    render_project_with_skew(stats, range, &[])
}

/// Most lines the skew section shows, the largest counts first.
const SKEW_ROWS: usize = 50;

/// The version-skew section: what each tool version sent that this
/// collector refused, downgraded or ignored in the range, largest first.
/// Every name in it came from a client, so all of it is escaped.
fn skew_section(rows: &[RefusalRow]) -> String {
    let mut summed: std::collections::BTreeMap<(&str, &str, &str), u64> = Default::default();
    for r in rows {
        *summed
            .entry((r.version.as_str(), r.reason.as_str(), r.detail.as_str()))
            .or_default() += r.count;
    }
    let mut lines: Vec<_> = summed.into_iter().collect();
    lines.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = String::from("<section id=\"skew\"><h2>Version skew</h2>\n");
    if lines.is_empty() {
        out.push_str(
            "<p class=\"message\">Nothing was refused, downgraded or ignored in this range.</p>\n</section>\n",
        );
        return out;
    }
    out.push_str(
        "<p class=\"note\">What tool versions sent that this collector's manifest or protocol \
         version lacks, or above the project's <code>max_tier</code>. Give the collector the \
         tool's new manifest to store these.</p>\n<ul class=\"skew\">\n",
    );
    for ((version, reason, detail), count) in lines.iter().take(SKEW_ROWS) {
        let (v, d) = (Esc(version), Esc(detail));
        let what = match *reason {
            "invalid_value" | "unknown_prop" => {
                format!("sends <code>{d}</code>, which the collector's manifest lacks")
            }
            "unknown_event" => {
                format!("sends event <code>{d}</code>, which the collector's manifest lacks")
            }
            "unknown_identity_field" => format!(
                "sends identity field <code>{}</code>, which the collector's manifest lacks",
                Esc(detail.strip_prefix("identity.").unwrap_or(detail))
            ),
            "event_above_tier" => format!(
                "sends <code>{d}</code> at a tier below its <code>min_tier</code> in the collector's manifest"
            ),
            "time_in_future" | "time_too_old" => {
                format!("sends <code>{d}</code> dated outside what the collector keeps")
            }
            "ignored_field" => format!(
                "sends field <code>{d}</code>, which this collector does not know; it was ignored"
            ),
            r if r.starts_with("downgraded_") => {
                let tiers = r.trim_start_matches("downgraded_").replace("_to_", " to ");
                format!(
                    "sent items downgraded from {}, the project's <code>max_tier</code>",
                    Esc(&tiers)
                )
            }
            other => format!("had items refused ({}): <code>{d}</code>", Esc(other)),
        };
        let _ = writeln!(
            out,
            "<li><strong>{v}</strong> {what} <span class=\"n\">({} item{})</span></li>",
            num(*count),
            if *count == 1 { "" } else { "s" }
        );
    }
    out.push_str("</ul>\n</section>\n");
    out
}

/// [`render_project`] with the range's version skew ([`RefusalRow`]s).
pub fn render_project_with_skew(
    stats: &ProjectStats,
    range: &Range,
    skew: &[RefusalRow],
) -> String {
    let mut body = String::new();
    let name = Esc(&stats.project);
    let _ = write!(
        body,
        "<h1 id=\"project-name\">{name}</h1>\n<p class=\"sub\">{} to {} (UTC), {} days.</p>\n",
        stats.from,
        stats.to,
        range.days()
    );
    body.push_str(&range_form(&stats.project, range));

    body.push_str("<section class=\"kpis\" aria-label=\"Headline numbers\">\n");
    kpi(
        &mut body,
        "stat-installs",
        "New installs",
        &num(stats.installs),
        "in this range",
    );
    kpi(
        &mut body,
        "stat-installs-all-time",
        "Installs, all time",
        &num(stats.installs_all_time),
        "since the first report",
    );
    kpi(
        &mut body,
        "stat-active",
        "Weekly active installs",
        &num(stats.active_installs),
        &format!("in {}", stats.to.iso_week()),
    );
    kpi(
        &mut body,
        "stat-setup-started",
        "Setup started",
        &num(stats.setup_started),
        "in this range",
    );
    kpi(
        &mut body,
        "stat-setup-completed",
        "Setup completed",
        &num(stats.setup_completed),
        "in this range",
    );
    kpi(
        &mut body,
        "stat-completion",
        "Setup completion",
        &pct(stats.setup_completion_rate),
        "completed ÷ started",
    );
    body.push_str("</section>\n");

    body.push_str(&delivery_section(&stats.delivery));

    body.push_str("<section id=\"usage\"><h2>Installs and use</h2>\n");
    body.push_str(&time_series(stats, range));
    body.push_str("</section>\n");

    body.push_str("<section id=\"funnel\"><h2>Setup</h2>\n");
    body.push_str(&charts::funnel(
        stats.installs,
        stats.setup_started,
        stats.setup_completed,
    ));
    let _ = write!(
        body,
        "<div class=\"table-scroll\"><table class=\"funnel\"><thead><tr><th scope=\"col\">Step</th>\
         <th scope=\"col\" class=\"n\">Count</th><th scope=\"col\" class=\"n\">Of previous step</th>\
         <th scope=\"col\" class=\"n\">Of installs</th></tr></thead><tbody>\
         <tr><th scope=\"row\">Installs</th><td class=\"n\">{}</td><td class=\"n\">—</td><td class=\"n\">—</td></tr>\
         <tr><th scope=\"row\">Setup started</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\
         <tr><th scope=\"row\">Setup completed</th><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\
         </tbody></table></div>\n<p class=\"note\">Setup can be started by installs from before \
         this range, so a step may exceed the one before it.</p>\n</section>\n",
        num(stats.installs),
        num(stats.setup_started),
        pct(ratio(stats.setup_started, stats.installs)),
        pct(ratio(stats.setup_started, stats.installs)),
        num(stats.setup_completed),
        pct(ratio(stats.setup_completed, stats.setup_started)),
        pct(ratio(stats.setup_completed, stats.installs)),
    );

    body.push_str(
        "<section id=\"platforms\"><h2>Versions and platforms</h2>\n<div class=\"cols\">\n",
    );
    breakdown(&mut body, "versions", "Version", &stats.versions);
    breakdown(&mut body, "os", "OS", &stats.os);
    breakdown(&mut body, "arch", "Arch", &stats.arch);
    body.push_str("</div>\n</section>\n");

    body.push_str(&adoption_section(stats));

    body.push_str("<section id=\"tiers\"><h2>Tiers</h2>\n");
    body.push_str(&charts::tier_mix(&stats.tiers));
    body.push_str("</section>\n");

    body.push_str("<section id=\"retention\"><h2>Retention by install week</h2>\n");
    if stats.retention.is_empty() {
        body.push_str(
            "<p class=\"message\">Retention needs data sent at the <code>anonymous</code> or \
             <code>full</code> tier; there is none in this range.</p>\n",
        );
    } else {
        body.push_str(
            "<p class=\"note\">Share of each week's new installs (at <code>anonymous</code> or \
             <code>full</code>) that were active n weeks later.</p>\n",
        );
        body.push_str(&retention_table(&stats.retention));
    }
    body.push_str("</section>\n");

    body.push_str(
        "<section id=\"events\"><h2>Events</h2>\n<div class=\"table-scroll\"><table class=\"events\">\
         <thead><tr><th scope=\"col\">Event</th><th scope=\"col\" class=\"n\">Count</th></tr></thead><tbody>\n",
    );
    if stats.events.is_empty() {
        body.push_str("<tr><td colspan=\"2\">No events in this range.</td></tr>\n");
    }
    for e in &stats.events {
        let _ = writeln!(
            body,
            "<tr><td class=\"event-name\">{}</td><td class=\"n\">{}</td></tr>",
            Esc(&e.event),
            num(e.count)
        );
    }
    body.push_str("</tbody></table></div>\n</section>\n");

    body.push_str(&commands_section(stats));
    body.push_str(&props_section(stats));

    body.push_str(&skew_section(skew));

    body.push_str("<section id=\"export\"><h2>Export</h2>\n<p>CSV for this range: ");
    let links: Vec<String> = CsvTable::ALL
        .iter()
        .map(|t| {
            format!(
                "<a href=\"{}\">{}</a>",
                esc(&export_href(&stats.project, *t, range)),
                t.as_str()
            )
        })
        .collect();
    body.push_str(&links.join(" · "));
    let _ = write!(
        body,
        ". JSON: <code>GET /api/v1/projects/{}/stats?from={}&amp;to={}</code> with the admin token.</p>\n</section>\n",
        esc(&url_component(&stats.project)),
        range.from,
        range.to
    );
    page(&stats.project, Chrome::Admin, &body)
}

// Delivery health, version adoption, command usage and prop breakdowns (issue 18).

/// Delivery health: the sentence first, then what was dropped, refused,
/// downgraded or ignored, by reason and tool version.
fn delivery_section(h: &DeliveryHealth) -> String {
    let mut out = String::from("<section id=\"delivery\"><h2>Delivery health</h2>\n");
    let warn = h.week_missing > 0 || !h.downgraded.is_empty();
    let _ = writeln!(
        out,
        "<p class=\"health{}\" id=\"delivery-summary\">{}</p>",
        if warn { " warn" } else { "" },
        Esc(&h.summary)
    );
    let _ = writeln!(
        out,
        "<p class=\"note\">In this range: {} items stored, {} known to be missing ({}). Missing \
         means dropped by clients (reported in <code>telemetry_dropped</code>) or refused by this \
         collector; items clients report as <code>refused_items</code> are the collector's \
         refusals, counted once.</p>",
        num(h.received),
        num(h.missing),
        pct(h.missing_share)
    );
    let _ = writeln!(
        out,
        "<p class=\"note\" id=\"delivery-retries\">Uploads in this range: {}; retries among \
         them: {} ({}), carrying {} items already stored, counted once. A retry is an upload \
         sent again after its answer was lost (a timeout, a cut connection, a killed uploader); \
         one the collector turned away and then took counts once.</p>",
        num(h.uploads),
        num(h.retries),
        pct(h.retry_share),
        num(h.replayed)
    );
    out.push_str("<div class=\"cols\">\n");
    let dropped: Vec<(String, Vec<u64>)> = h
        .dropped
        .iter()
        .map(|r| (r.reason.clone(), vec![r.count]))
        .collect();
    out.push_str("<section class=\"breakdown\" id=\"delivery-dropped\">");
    out.push_str(&charts::bar_rows(
        "Dropped by clients, by reason",
        "items",
        &[("items", "s2")],
        &dropped,
    ));
    out.push_str(
        "<div class=\"table-scroll\"><table class=\"dropped-by-version\"><thead><tr>\
         <th scope=\"col\">Version</th><th scope=\"col\" class=\"n\">Dropped</th></tr></thead><tbody>",
    );
    if h.dropped_by_version.is_empty() {
        out.push_str("<tr><td colspan=\"2\">Nothing reported dropped.</td></tr>");
    }
    for v in &h.dropped_by_version {
        let _ = write!(
            out,
            "<tr><td class=\"key\">{}</td><td class=\"n\">{}</td></tr>",
            Esc(&v.version),
            num(v.count)
        );
    }
    out.push_str("</tbody></table></div></section>\n");
    for (id, title, rows) in [
        ("delivery-refused", "Refused by the collector", &h.refused),
        ("delivery-downgraded", "Kept at a lower tier", &h.downgraded),
        ("delivery-ignored", "Unknown fields ignored", &h.ignored),
    ] {
        let _ = write!(
            out,
            "<section class=\"breakdown\" id=\"{id}\"><h3>{title}</h3><div class=\"table-scroll\"><table>\
             <thead><tr><th scope=\"col\">Reason</th><th scope=\"col\">Version</th>\
             <th scope=\"col\" class=\"n\">Items</th><th scope=\"col\">What</th></tr></thead><tbody>"
        );
        if rows.is_empty() {
            out.push_str("<tr><td colspan=\"4\">None in this range.</td></tr>");
        }
        for r in rows.iter() {
            let details: Vec<String> = r.details.iter().map(|d| esc(d)).collect();
            let _ = write!(
                out,
                "<tr><td class=\"key\">{}</td><td class=\"key\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                Esc(&r.reason),
                Esc(&r.version),
                num(r.count),
                details.join(", ")
            );
        }
        out.push_str("</tbody></table></div></section>\n");
    }
    out.push_str("</div>\n</section>\n");
    out
}

/// `W47` for a week, as the weekly charts label it.
fn week_short(week: IsoWeek) -> String {
    format!("W{:02}", week.week)
}

/// Version adoption: the stacked share of active installs by version per
/// week, then the same numbers as a table.
fn adoption_section(stats: &ProjectStats) -> String {
    let a = &stats.adoption;
    let mut out = String::from("<section id=\"adoption\"><h2>Version adoption</h2>\n");
    out.push_str(
        "<p class=\"note\">Share of each week's active installs by tool version, oldest \
         version at the bottom. Each install reports <code>active</code> once a week at any \
         tier, so these are distinct installs.</p>\n",
    );
    let x: Vec<String> = a.weeks.iter().map(|w| week_short(*w)).collect();
    let full: Vec<String> = a.weeks.iter().map(|w| week_full(*w)).collect();
    let bands: Vec<ShareBand<'_>> = a
        .versions
        .iter()
        .enumerate()
        .map(|(i, s)| ShareBand {
            name: &s.version,
            class: charts::area_class(i, s.version == OTHER),
            shares: &s.share,
            counts: &s.active_installs,
        })
        .collect();
    out.push_str(&charts::stacked_shares(
        "Share of weekly active installs by version",
        "ISO week",
        &x,
        &full,
        &bands,
    ));
    let _ = write!(
        out,
        "<details><summary>Adoption as a table</summary><div class=\"table-scroll\"><table class=\"adoption\">\
         <thead><tr><th scope=\"col\">Version</th>"
    );
    for w in &a.weeks {
        let _ = write!(out, "<th scope=\"col\" class=\"n\">{w}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for s in &a.versions {
        let _ = write!(out, "<tr><td class=\"key\">{}</td>", Esc(&s.version));
        for (n, share) in s.active_installs.iter().zip(&s.share) {
            let _ = write!(
                out,
                "<td class=\"n\" title=\"{} active installs\">{}</td>",
                num(*n),
                pct(*share)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("<tr><th scope=\"row\">All versions</th>");
    for n in &a.active_installs {
        let _ = write!(out, "<td class=\"n\">{}</td>", num(*n));
    }
    out.push_str("</tr></tbody></table></div></details>\n");
    if a.folded > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{OTHER} folds {} less active versions.</p>",
            num(a.folded)
        );
    }
    out.push_str("</section>\n");
    out
}

/// Command usage: each event's count, its weekly trend and its count per
/// weekly active install.
fn commands_section(stats: &ProjectStats) -> String {
    let mut out = String::from(
        "<section id=\"commands\"><h2>Command usage</h2>\n<div class=\"table-scroll\"><table class=\"commands\">\
         <thead><tr><th scope=\"col\">Event</th><th scope=\"col\" class=\"n\">Count</th>\
         <th scope=\"col\">Per week</th><th scope=\"col\" class=\"n\">Per weekly active install</th>\
         <th scope=\"col\" class=\"n\">Installs that used it</th></tr></thead><tbody>\n",
    );
    if stats.commands.is_empty() {
        out.push_str("<tr><td colspan=\"5\">No events in this range.</td></tr>\n");
    }
    for c in &stats.commands {
        let per = c
            .per_active_install
            .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"));
        let used = match c.installs {
            Some(n) => format!("{} ({})", num(n), pct(c.install_share)),
            None => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"key\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n installs\">{}</td></tr>",
            Esc(&c.event),
            num(c.count),
            charts::sparkline(&c.weekly, &format!("{} per week", c.event)),
            per,
            used
        );
    }
    out.push_str(
        "</tbody></table></div>\n<p class=\"note\">Per weekly active install: the event's count \
         in the last week over that week's active installs (every tier). Installs that used it: \
         distinct installs that sent it in the last week, and their share of the installs that \
         sent anything that week, from data sent at <code>anonymous</code> or <code>full</code> \
         only (aggregate counts carry no install).</p>\n\
         </section>\n",
    );
    out
}

/// Prop breakdowns: one chart and table per event and prop.
fn props_section(stats: &ProjectStats) -> String {
    let mut out = String::from("<section id=\"props\"><h2>Props</h2>\n");
    let shown: Vec<&PropBreakdown> = stats
        .props
        .iter()
        .filter(|b| b.event != telemetry_protocol::manifest::builtin::DROPPED)
        .collect();
    if shown.is_empty() {
        out.push_str("<p class=\"message\">No event declares props.</p>\n");
    }
    out.push_str("<div class=\"cols\">\n");
    for b in shown {
        out.push_str(&prop_panel(b));
    }
    out.push_str("</div>\n</section>\n");
    out
}

/// One prop's chart, value table and weekly series.
pub fn prop_panel(b: &PropBreakdown) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<section class=\"breakdown prop\" data-event=\"{}\" data-prop=\"{}\" data-kind=\"{}\">",
        Esc(&b.event),
        Esc(&b.prop),
        Esc(&b.kind)
    );
    let title = format!("{} · {} ({})", b.event, b.prop, b.kind);
    let rows: Vec<(String, Vec<u64>)> = b
        .values
        .iter()
        .map(|v| (v.value.clone(), vec![v.count]))
        .collect();
    out.push_str(&charts::bar_rows(
        &title,
        "events",
        &[("events", "s1")],
        &rows,
    ));
    let installs = match b.installs {
        Some(n) => format!(
            " {} distinct installs sent it in the last week (<code>anonymous</code> and <code>full</code>).",
            num(n)
        ),
        None => String::new(),
    };
    let _ = write!(
        out,
        "<p class=\"note\">{} events, {} without this prop.{installs}</p>\
         <details><summary>Values and weekly counts</summary><div class=\"table-scroll\"><table class=\"prop-values\">\
         <thead><tr><th scope=\"col\">Value</th><th scope=\"col\" class=\"n\">Events</th>\
         <th scope=\"col\" class=\"n\">Share</th><th scope=\"col\" class=\"n\">Installs, last week</th>\
         <th scope=\"col\" class=\"n\">Of installs</th></tr></thead><tbody>",
        num(b.events),
        num(b.not_set)
    );
    for v in &b.values {
        let _ = write!(
            out,
            "<tr><td class=\"key\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n installs\">{}</td><td class=\"n\">{}</td></tr>",
            Esc(&v.value),
            num(v.count),
            pct(v.share),
            v.installs.map_or_else(|| "—".to_owned(), num),
            pct(v.install_share)
        );
    }
    out.push_str("</tbody></table>");
    if !b.series.is_empty() {
        out.push_str("<table class=\"prop-series\"><thead><tr><th scope=\"col\">Value</th>");
        for w in &b.weeks {
            let _ = write!(out, "<th scope=\"col\" class=\"n\">{}</th>", week_short(*w));
        }
        out.push_str("</tr></thead><tbody>");
        for s in &b.series {
            let _ = write!(out, "<tr><td class=\"key\">{}</td>", Esc(&s.value));
            for n in &s.counts {
                let _ = write!(out, "<td class=\"n\">{}</td>", num(*n));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</div></details>\n</section>\n");
    out
}

/// The sign-in page. `error` is a fixed message of ours, never client input.
pub fn render_login(error: Option<&str>, next: &str) -> String {
    let mut body = String::from("<section class=\"login\">\n<h1>Sign in</h1>\n");
    if let Some(error) = error {
        let _ = writeln!(body, "<p class=\"error\" role=\"alert\">{}</p>", Esc(error));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/dashboard/login\">\n\
         <label for=\"token\">Admin token</label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\n\
         <button type=\"submit\">Sign in</button>\n</form>\n\
         <p class=\"note\">The token is in the file the collector named when it started.</p>\n</section>\n",
        Esc(next)
    );
    page("Sign in", Chrome::Plain, &body)
}

#[cfg(test)]
pub(crate) mod tests {
    use telemetry_protocol::Tier;

    use super::*;
    use crate::report::{DailyPoint, EventTotal, TierShare, WeeklyPoint};

    pub(crate) const HOSTILE: [&str; 2] =
        ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"];

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    /// A small, fully known report whose client-sent strings are all hostile.
    pub(crate) fn sample_stats() -> ProjectStats {
        let from = day("2026-11-09");
        let daily: Vec<DailyPoint> = (0..13)
            .map(|i| DailyPoint {
                day: from.add_days(i),
                installs: u64::from(i as u32 % 3),
                active: 1,
                setup_started: 1,
                setup_completed: u64::from(i % 2 == 0),
                events: 5,
            })
            .collect();
        ProjectStats {
            project: "demo-cli".to_owned(),
            from,
            to: day("2026-11-21"),
            installs: 12,
            installs_all_time: 40,
            active_installs: 7,
            setup_started: 8,
            setup_completed: 6,
            setup_completion_rate: Some(0.75),
            daily,
            weekly: vec![
                WeeklyPoint {
                    week: "2026-W46".parse().unwrap(),
                    installs: 5,
                    active_installs: 6,
                    setup_started: 4,
                    setup_completed: 3,
                    identified_installs: 4,
                },
                WeeklyPoint {
                    week: "2026-W47".parse().unwrap(),
                    installs: 7,
                    active_installs: 7,
                    setup_started: 4,
                    setup_completed: 3,
                    identified_installs: 5,
                },
            ],
            versions: vec![
                Breakdown {
                    key: "1.2.0".to_owned(),
                    installs: 9,
                    active_installs: 5,
                },
                Breakdown {
                    key: HOSTILE[1].to_owned(),
                    installs: 3,
                    active_installs: 2,
                },
            ],
            os: vec![Breakdown {
                key: "linux".to_owned(),
                installs: 12,
                active_installs: 7,
            }],
            arch: vec![Breakdown {
                key: "x86_64".to_owned(),
                installs: 12,
                active_installs: 7,
            }],
            tiers: vec![
                TierShare {
                    tier: Tier::Aggregate,
                    events: 30,
                },
                TierShare {
                    tier: Tier::Anonymous,
                    events: 20,
                },
                TierShare {
                    tier: Tier::Full,
                    events: 15,
                },
            ],
            events: vec![
                EventTotal {
                    event: "command".to_owned(),
                    count: 40,
                },
                EventTotal {
                    event: HOSTILE[0].to_owned(),
                    count: 2,
                },
                EventTotal {
                    event: HOSTILE[1].to_owned(),
                    count: 1,
                },
            ],
            retention: vec![Cohort {
                week: "2026-W46".parse().unwrap(),
                installs: 4,
                retained: vec![4, 3],
            }],
            props: sample_props(from, day("2026-11-21")),
            adoption: crate::stats::adoption::version_adoption(
                from,
                day("2026-11-21"),
                &sample_counters(),
            ),
            commands: {
                let mut c = crate::stats::adoption::command_usage(
                    from,
                    day("2026-11-21"),
                    &sample_counters(),
                );
                let weeks = crate::stats::props::weeks_of(from, day("2026-11-21"));
                crate::stats::adoption::add_installs(
                    &mut c,
                    &crate::stats::installs::WeeklyInstalls::of(&weeks, &sample_uses()),
                );
                c
            },
            delivery: crate::stats::health::delivery_health(
                from,
                day("2026-11-21"),
                &sample_counters(),
                &[crate::store::PropCounterRow {
                    day: day("2026-11-18"),
                    event: "telemetry_dropped".to_owned(),
                    props: r#"{"reason":"outbox_full"}"#.to_owned(),
                    count: 3,
                }],
                &[crate::store::RefusalRow {
                    day: day("2026-11-18"),
                    version: HOSTILE[1].to_owned(),
                    reason: "unknown_event".to_owned(),
                    detail: HOSTILE[0].to_owned(),
                    count: 2,
                }],
                &[crate::store::UploadRow {
                    day: day("2026-11-18"),
                    uploads: 40,
                    retries: 3,
                    replayed: 9,
                }],
            ),
        }
    }

    /// Distinct installs behind the sample (weekly_uses rows): 5 installs in
    /// the last week, 3 of them sent `command`, 2 with the hostile name.
    pub(crate) fn sample_uses() -> Vec<crate::store::UseRow> {
        let row = |week: &str, event: &str, prop: &str, value: &str, installs: u64| {
            crate::store::UseRow {
                week: day(week),
                event: event.to_owned(),
                prop: prop.to_owned(),
                value: value.to_owned(),
                installs,
            }
        };
        vec![
            row("2026-11-09", "", "", "", 4),
            row("2026-11-16", "", "", "", 5),
            row("2026-11-16", "command", "", "", 3),
            row("2026-11-16", "command", "name", HOSTILE[0], 2),
        ]
    }

    /// Counter rows behind the sample's adoption and command usage: 12
    /// versions (one hostile), so the chart folds a tail into "other".
    fn sample_counters() -> crate::store::StatsInput {
        let mut counters = Vec::new();
        let mut push = |d: &str, event: &str, version: &str, count: u64| {
            counters.push(crate::store::CounterRow {
                day: day(d),
                event: event.to_owned(),
                version: version.to_owned(),
                os: "linux".to_owned(),
                arch: "x86_64".to_owned(),
                tier: Tier::Aggregate,
                count,
            });
        };
        for k in 0..11u64 {
            let v = format!("1.{k}.0");
            push("2026-11-10", "active", &v, 12 - k);
            push("2026-11-17", "active", &v, 2 + k);
        }
        push("2026-11-17", "active", HOSTILE[1], 9);
        push("2026-11-18", "command", "1.2.0", 30);
        push("2026-11-11", "command", "1.2.0", 10);
        push("2026-11-18", HOSTILE[0], "1.2.0", 2);
        crate::store::StatsInput {
            counters,
            ..Default::default()
        }
    }

    /// Prop breakdowns with a hostile event, prop and value.
    fn sample_props(from: Day, to: Day) -> Vec<crate::report::PropBreakdown> {
        let row = |d: &str, event: &str, props: serde_json::Value, count: u64| {
            crate::store::PropCounterRow {
                day: day(d),
                event: event.to_owned(),
                props: props.to_string(),
                count,
            }
        };
        let rows = vec![
            row(
                "2026-11-11",
                "command",
                serde_json::json!({"name": "init"}),
                10,
            ),
            row(
                "2026-11-18",
                "command",
                serde_json::json!({"name": "greet"}),
                20,
            ),
            row(
                "2026-11-18",
                "command",
                serde_json::json!({"name": HOSTILE[0]}),
                10,
            ),
            row(
                "2026-11-18",
                HOSTILE[0],
                serde_json::json!({HOSTILE[1]: HOSTILE[1]}),
                2,
            ),
        ];
        crate::stats::props::breakdowns(None, from, to, &rows, &sample_uses())
    }

    fn range(stats: &ProjectStats, by: Granularity) -> Range {
        Range {
            from: stats.from,
            to: stats.to,
            by,
        }
    }

    /// No markup from a client survives: the raw strings never appear, their escaped forms do.
    pub(crate) fn assert_escaped(html: &str) {
        for hostile in HOSTILE {
            assert!(!html.contains(hostile), "raw {hostile} in page");
        }
        assert!(!html.contains("<script"), "a script element in page");
        assert!(!html.contains("<img"), "an img element in page");
    }

    #[test]
    fn project_page_shows_every_number_and_escapes_client_values() {
        let stats = sample_stats();
        for by in [Granularity::Day, Granularity::Week] {
            let html = render_project(&stats, &range(&stats, by));
            assert_escaped(&html);
            assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
            assert!(
                html.contains("<td class=\"event-name\">&lt;img src=x onerror=alert(1)&gt;</td>")
            );
            for (id, value) in [
                ("stat-installs", "12"),
                ("stat-installs-all-time", "40"),
                ("stat-active", "7"),
                ("stat-setup-started", "8"),
                ("stat-setup-completed", "6"),
                ("stat-completion", "75.0%"),
            ] {
                assert!(
                    html.contains(&format!("id=\"{id}\">{value}</div>")),
                    "{id} = {value}"
                );
            }
            // Funnel conversions, tiers and retention.
            assert!(html.contains("8 · 66.7% of previous step"));
            assert!(html.contains("6 · 75.0% of previous step"));
            assert!(html.contains("aggregate: 30 (46.2%)"));
            assert!(html.contains("title=\"3 of 4 installs\">75.0%</td>"));
            assert!(html.contains("href=\"/dashboard/projects/demo-cli/export/daily.csv?from=2026-11-09&amp;to=2026-11-21\""));
        }
        let daily = render_project(&stats, &range(&stats, Granularity::Day));
        for d in &stats.daily {
            assert!(daily.contains(&format!(
                "<title>{}: {} installs</title>",
                d.day, d.installs
            )));
        }
        let weekly = render_project(&stats, &range(&stats, Granularity::Week));
        assert!(weekly.contains("<title>2026-W47 (week of 2026-11-16): 7 new installs</title>"));
    }

    #[test]
    fn delivery_health_says_what_is_missing_with_escaped_values() {
        let stats = sample_stats();
        let html = render_project(&stats, &range(&stats, Granularity::Day));
        assert_escaped(&html);
        assert_eq!(stats.delivery.week_missing, 5);
        assert!(
            html.contains(
                "id=\"delivery-summary\">About 4.1% of events are known to be missing this week \
                 (2026-W47): 3 dropped by clients, 2 refused by the collector. \
                 About 7.5% of 40 uploads this week were retries.</p>"
            ),
            "{}",
            stats.delivery.summary
        );
        assert!(html.contains(
            "<td class=\"key\">unknown_event</td><td class=\"key\">&lt;img src=x onerror=alert(1)&gt;</td>\
             <td class=\"n\">2</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
        ));
        assert!(html.contains("<title>outbox_full: 3 items</title>"));
        assert!(html.contains(
            "id=\"delivery-retries\">Uploads in this range: 40; retries among them: 3 (7.5%), \
             carrying 9 items already stored"
        ));
    }

    #[test]
    fn the_skew_section_names_what_each_version_sends_escaped() {
        let stats = sample_stats();
        let row = |version: &str, reason: &str, detail: &str, count: u64| RefusalRow {
            day: day("2026-11-20"),
            version: version.into(),
            reason: reason.into(),
            detail: detail.into(),
            count,
        };
        let rows = [
            row("1.5.0", "invalid_value", "command.name=deploy", 3),
            row("1.5.0", "invalid_value", "command.name=deploy", 2),
            row("1.5.0", "unknown_event", "lint", 4),
            row("1.5.0", "downgraded_full_to_anonymous", "", 7),
            row("1.6.0<b>", "ignored_field", "events[].<script>", 1),
        ];
        let html = render_project_with_skew(&stats, &range(&stats, Granularity::Day), &rows);
        assert_escaped(&html);
        for line in [
            "<li><strong>1.5.0</strong> sent items downgraded from full to anonymous, the project's <code>max_tier</code> <span class=\"n\">(7 items)</span></li>",
            "<li><strong>1.5.0</strong> sends <code>command.name=deploy</code>, which the collector's manifest lacks <span class=\"n\">(5 items)</span></li>",
            "<li><strong>1.5.0</strong> sends event <code>lint</code>, which the collector's manifest lacks <span class=\"n\">(4 items)</span></li>",
        ] {
            assert!(html.contains(line), "missing {line}");
        }
        assert!(html.contains("1.6.0&lt;b&gt;"));
        assert!(!html.contains("<script>"));
        let empty = render_project(&stats, &range(&stats, Granularity::Day));
        assert!(empty.contains("Nothing was refused, downgraded or ignored in this range."));
    }

    #[test]
    fn adoption_commands_and_props_are_shown_escaped() {
        let stats = sample_stats();
        let html = render_project(&stats, &range(&stats, Granularity::Day));
        assert_escaped(&html);
        // 12 versions: the ten most active, then "(other)".
        assert_eq!(stats.adoption.versions.len(), 11);
        assert_eq!(html.matches("<polygon class=\"area").count(), 11);
        assert!(html.contains("<td class=\"key\">&lt;img src=x onerror=alert(1)&gt;</td>"));
        assert!(html.contains("id=\"commands\""));
        assert!(html.contains("<td class=\"key\">command</td><td class=\"n\">40</td>"));
        assert!(
            html.contains("data-event=\"command\" data-prop=\"name\" data-kind=\"undeclared\"")
        );
        assert!(html.contains("data-event=\"&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(html.contains(
            "<td class=\"key\">greet</td><td class=\"n\">20</td><td class=\"n\">50.0%</td>"
        ));
        // Distinct installs: 3 of the last week's 5 sent `command`, 2 of
        // them with the hostile name, shown escaped like its value.
        assert!(
            html.contains("<td class=\"n installs\">3 (60.0%)</td>"),
            "{html}"
        );
        assert!(html.contains(
            "<td class=\"key\">&lt;script&gt;alert(1)&lt;/script&gt;</td><td class=\"n\">10</td>\
             <td class=\"n\">25.0%</td><td class=\"n installs\">2</td><td class=\"n\">66.7%</td>"
        ));
    }

    #[test]
    fn retention_is_explained_when_there_is_none() {
        let mut stats = sample_stats();
        stats.retention.clear();
        let html = render_project(&stats, &range(&stats, Granularity::Day));
        assert!(html.contains("Retention needs data sent at the"));
        assert!(!html.contains("class=\"retention\""));
    }

    #[test]
    fn overview_summarizes_each_project() {
        let mut stats = sample_stats();
        stats.project = HOSTILE[0].to_owned();
        let summary = ProjectSummary::from_stats(&stats);
        // The last 7 days of i % 3 for i = 6..=12: 0+1+2+0+1+2+0.
        assert_eq!(summary.installs_7d, 6);
        assert_eq!(summary.installs_30d, 12);
        let html = render_overview(&[summary], day("2026-11-21"));
        assert_escaped(&html);
        assert!(html.contains("<td class=\"n installs-7d\">6</td>"));
        assert!(html.contains("<td class=\"n installs-all\">40</td>"));
        assert!(html.contains("<td class=\"n completion\">75.0%</td>"));
        assert!(
            html.contains("href=\"/dashboard/projects/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\"")
        );
        assert!(render_overview(&[], day("2026-11-21")).contains("No project has sent data yet"));
    }

    #[test]
    fn long_breakdowns_fold_into_others() {
        let rows: Vec<Breakdown> = (0..13)
            .map(|i| Breakdown {
                key: format!("v{i}"),
                installs: 1,
                active_installs: 2,
            })
            .collect();
        let top = top_rows(&rows);
        assert_eq!(top.len(), TOP_ROWS + 1);
        assert_eq!(top[TOP_ROWS], ("3 others".to_owned(), vec![3, 6]));
    }

    #[test]
    fn week_mondays() {
        assert_eq!(
            week_monday("2026-W47".parse().unwrap()),
            Some(day("2026-11-16"))
        );
        assert_eq!(
            week_monday("2021-W01".parse().unwrap()),
            Some(day("2021-01-04"))
        );
        assert_eq!(
            week_monday("2020-W53".parse().unwrap()),
            Some(day("2020-12-28"))
        );
    }

    #[test]
    fn login_page_keeps_next_escaped() {
        let html = render_login(Some("That token is not valid."), "/dashboard\"><script>");
        assert!(html.contains("value=\"/dashboard&quot;&gt;&lt;script&gt;\""));
        assert!(html.contains("That token is not valid."));
        assert!(html.contains("type=\"password\""));
    }
}
