//! The Prometheus text exposition (format 0.0.4) of the KPIs, rendered
//! straight from a [`View`]: no per-series objects, integers written exactly.
//!
//! Business metrics live under `sales_`. Counted parts are gauges per
//! (rep, team, window); histograms are gauge histograms (`_bucket`, `_sum`,
//! `_count`, declared `histogram` as the text format requires);
//! current-state KPIs are gauges per (rep, team) without a window. Team, org,
//! ratios and quantiles are PromQL over these (deploy/prometheus), so they
//! stay correct when several instances each own some partitions. Reps past
//! `max_reps` are folded into `rep="other"`.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::engine::parts::*;
use crate::engine::View;
use crate::kpi::{Layout, Totals};

/// The metric name of each scalar part (by part index); `None` for parts
/// exported inside a histogram.
const NAMES: [Option<(&str, &str)>; 35] = [
    Some(("sales_leads_created", "Leads created in the window")),
    Some(("sales_leads_converted", "Leads converted in the window")),
    Some((
        "sales_prospects_contacted",
        "Leads touched for the first time in the window",
    )),
    None,
    None,
    Some(("sales_calls", "Calls logged in the window")),
    Some((
        "sales_calls_connected",
        "Calls with outcome connected in the window",
    )),
    Some((
        "sales_call_duration_seconds",
        "Total duration of the calls in the window",
    )),
    Some(("sales_emails", "Emails sent in the window")),
    Some((
        "sales_meetings_booked",
        "Meetings booked in the window (at booking time)",
    )),
    Some((
        "sales_meetings_due",
        "Meetings not canceled whose time fell in the window",
    )),
    Some(("sales_meetings_held", "Due meetings that were held")),
    Some((
        "sales_meetings_missed",
        "Due meetings recorded as no-show or still unresolved after the grace",
    )),
    Some(("sales_deals_created", "Deals opened in the window")),
    Some(("sales_deals_won", "Deals won in the window")),
    Some(("sales_deals_lost", "Deals lost in the window")),
    Some((
        "sales_won_amount",
        "Amount won in the window, in the base currency",
    )),
    None,
    None,
    Some((
        "sales_selling_time_seconds",
        "Time logged as selling in the window",
    )),
    Some((
        "sales_logged_time_seconds",
        "Time logged in any category in the window",
    )),
    Some((
        "sales_customers_new",
        "Accounts that started paying in the window",
    )),
    Some((
        "sales_mrr_new",
        "MRR of the accounts that started in the window",
    )),
    Some((
        "sales_customers_expanded",
        "Active accounts whose MRR rose in the window",
    )),
    Some(("sales_mrr_expansion", "MRR added by rises in the window")),
    Some((
        "sales_mrr_contraction",
        "MRR removed by falls in the window",
    )),
    Some((
        "sales_customers_churned",
        "Active accounts that churned in the window",
    )),
    Some((
        "sales_mrr_churned",
        "Last MRR of the accounts that churned in the window",
    )),
    Some(("sales_nps_responses", "NPS answers in the window")),
    Some((
        "sales_nps_promoters",
        "NPS answers of 9 or 10 in the window",
    )),
    Some((
        "sales_nps_detractors",
        "NPS answers of 0 to 6 in the window",
    )),
    Some(("sales_csat_responses", "CSAT answers in the window")),
    Some((
        "sales_csat_satisfied",
        "CSAT answers of 4 or 5 in the window",
    )),
    Some((
        "sales_csat_score",
        "Sum of the CSAT scores given in the window",
    )),
    Some((
        "sales_acquisition_spend",
        "Acquisition spend in the window, in the base currency",
    )),
];

/// A gauge histogram: its first bucket part, sum and count parts, bounds.
struct Hist {
    name: &'static str,
    help: &'static str,
    buckets: usize,
    sum: usize,
    count: usize,
    bounds: Vec<String>,
}

/// What one render produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    pub series: usize,
    pub folded_reps: usize,
}

/// Writes an integer part in its unit: counts as integers, micro-units as
/// exact decimals (no float formatting).
fn value(out: &mut String, unit: Unit, raw: i64) {
    match unit {
        Unit::Count => int(out, raw),
        Unit::Micro => micro(out, raw),
    }
}

/// Appends `n` in decimal, as `write!(out, "{n}")` would, without the
/// formatting machinery: a scrape writes a million numbers.
fn int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    digits(out, n.unsigned_abs(), 1);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 || buf.len() - i < width.max(1) {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ascii digits"));
}

fn micro(out: &mut String, raw: i64) {
    if raw < 0 {
        out.push('-');
    }
    let abs = raw.unsigned_abs();
    digits(out, abs / 1_000_000, 1);
    let mut frac = abs % 1_000_000;
    if frac != 0 {
        // Six decimals, trailing zeros dropped.
        let mut width = 6;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        out.push('.');
        digits(out, frac, width);
    }
}

/// Appends one sample line: its start (`name{labels} `) in pieces, then
/// the value, without the formatting machinery.
fn sample(out: &mut String, pieces: &[&str], unit: Unit, raw: i64) {
    for p in pieces {
        out.push_str(p);
    }
    value(out, unit, raw);
    out.push('\n');
}

fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// Sums the view's rows per (rep, team), folding reps past `max_reps`
/// (in rep id order) into `other`.
fn fold(view: &View, max_reps: usize) -> (BTreeMap<(String, String), Totals>, usize) {
    let mut reps: Vec<&str> = view.rows.iter().filter_map(|r| r.rep.as_deref()).collect();
    reps.sort_unstable();
    reps.dedup();
    let kept: std::collections::HashSet<&str> = reps.iter().take(max_reps).copied().collect();
    let folded = reps.len().saturating_sub(max_reps);
    let mut out: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for row in &view.rows {
        let rep = match row.rep.as_deref() {
            None => String::new(),
            Some(r) if kept.contains(r) => r.to_owned(),
            Some(_) => "other".to_owned(),
        };
        let team = row.team.clone().unwrap_or_default();
        out.entry((rep, team))
            .or_insert_with(|| Totals::zero(row.parts.len(), row.gauges.len()))
            .add(&row.parts, &row.gauges);
    }
    (out, folded)
}

/// Renders every KPI series of `view` into `out`.
pub fn render(layout: &Layout, view: &View, max_reps: usize, out: &mut String) -> RenderStats {
    let (pairs, folded_reps) = fold(view, max_reps);
    let n_parts = count(layout.stages.len());
    let mut series = 0;
    // Label prefixes `rep="..",team=".."` once per pair, then per window.
    let pair_labels: Vec<String> = pairs
        .keys()
        .map(|(r, t)| format!("rep=\"{}\",team=\"{}\"", escape(r), escape(t)))
        .collect();
    let win_labels: Vec<Vec<String>> = pair_labels
        .iter()
        .map(|p| {
            layout
                .windows
                .iter()
                .map(|w| format!("{p},window=\"{}\"", escape(w)))
                .collect()
        })
        .collect();
    let values: Vec<&Totals> = pairs.values().collect();

    for (i, name) in NAMES.iter().enumerate() {
        let Some((name, help)) = name else { continue };
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
        let unit = SCALARS[i].2;
        for (labels, Totals { parts, .. }) in win_labels.iter().zip(&values) {
            for (w, l) in labels.iter().enumerate() {
                sample(out, &[name, "{", l, "} "], unit, parts[w * n_parts + i]);
                series += 1;
            }
        }
    }

    let histograms = [
        Hist {
            name: "sales_lead_response_seconds",
            help: "Time from a lead's creation to its first touch, for first touches in the window",
            buckets: LEAD_RESPONSE_HIST,
            sum: LEAD_RESPONSE_SUM,
            count: LEAD_RESPONSE_COUNT,
            bounds: LEAD_RESPONSE_BOUNDS.iter().map(|b| b.to_string()).collect(),
        },
        Hist {
            name: "sales_sales_cycle_seconds",
            help: "Time from a deal's creation to its win, for deals won in the window",
            buckets: SALES_CYCLE_HIST,
            sum: SALES_CYCLE_SUM,
            count: SALES_CYCLE_COUNT,
            bounds: SALES_CYCLE_BOUNDS_DAYS
                .iter()
                .map(|d| (d * 86_400).to_string())
                .collect(),
        },
    ];
    for Hist {
        name,
        help,
        buckets: hist,
        sum,
        count: cnt,
        bounds,
    } in &histograms
    {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} histogram");
        for (labels, Totals { parts, .. }) in win_labels.iter().zip(&values) {
            for (w, l) in labels.iter().enumerate() {
                let p = &parts[w * n_parts..(w + 1) * n_parts];
                let mut cumulative = 0i64;
                for (b, le) in bounds
                    .iter()
                    .map(String::as_str)
                    .chain(["+Inf"])
                    .enumerate()
                {
                    cumulative += p[hist + b];
                    sample(
                        out,
                        &[name, "_bucket{", l, ",le=\"", le, "\"} "],
                        Unit::Count,
                        cumulative,
                    );
                }
                sample(out, &[name, "_sum{", l, "} "], Unit::Micro, p[*sum]);
                sample(out, &[name, "_count{", l, "} "], Unit::Count, p[*cnt]);
                series += bounds.len() + 3;
            }
        }
    }

    let _ = writeln!(
        out,
        "# HELP sales_stage_exits Deals leaving an open stage in the window, by outcome.\n# TYPE sales_stage_exits gauge"
    );
    let stages: Vec<_> = layout.stages.iter().map(|s| escape(s)).collect();
    for (labels, Totals { parts, .. }) in win_labels.iter().zip(&values) {
        for (w, l) in labels.iter().enumerate() {
            for (s, stage) in stages.iter().enumerate() {
                for o in ExitOutcome::ALL {
                    let outcome = o.as_str();
                    sample(
                        out,
                        &[
                            "sales_stage_exits{",
                            l,
                            ",stage=\"",
                            stage,
                            "\",outcome=\"",
                            outcome,
                            "\"} ",
                        ],
                        Unit::Count,
                        parts[w * n_parts + stage_exit(s, o)],
                    );
                    series += 1;
                }
            }
        }
    }

    // Current state: no window label.
    let stage_gauge = |out: &mut String,
                       series: &mut usize,
                       name: &str,
                       help: &str,
                       off: usize,
                       total: usize,
                       unit: Unit| {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
        for (l, Totals { gauges: g, .. }) in pair_labels.iter().zip(&values) {
            let mut staged = 0;
            for (s, stage) in stages.iter().enumerate() {
                let v = g[G_STAGES + 2 * s + off];
                staged += v;
                sample(out, &[name, "{", l, ",stage=\"", stage, "\"} "], unit, v);
            }
            sample(
                out,
                &[name, "{", l, ",stage=\"none\"} "],
                unit,
                g[total] - staged,
            );
            *series += layout.stages.len() + 1;
        }
    };
    stage_gauge(
        out,
        &mut series,
        "sales_open_deals",
        "Open deals now, by pipeline stage (none: unknown or outside the pipeline)",
        0,
        G_OPEN_DEALS,
        Unit::Count,
    );
    stage_gauge(
        out,
        &mut series,
        "sales_open_pipeline_amount",
        "Amount of the open deals now, by stage, in the base currency",
        1,
        G_OPEN_AMOUNT,
        Unit::Micro,
    );
    let current: [(&str, &str, usize, Unit); 4] = [
        (
            "sales_customers_active",
            "Accounts paying now",
            G_CUSTOMERS_ACTIVE,
            Unit::Count,
        ),
        (
            "sales_mrr",
            "Monthly recurring revenue now, in the base currency",
            G_MRR,
            Unit::Micro,
        ),
        (
            "sales_meetings_upcoming",
            "Meetings scheduled and not yet due",
            G_MEETINGS_UPCOMING,
            Unit::Count,
        ),
        (
            "sales_quota",
            "Latest quota per period, in the base currency",
            G_QUOTA_MONTH,
            Unit::Micro,
        ),
    ];
    for (name, help, g_idx, unit) in current {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
        for (l, Totals { gauges: g, .. }) in pair_labels.iter().zip(&values) {
            if name == "sales_quota" {
                for (period, idx) in [("month", G_QUOTA_MONTH), ("quarter", G_QUOTA_QUARTER)] {
                    sample(
                        out,
                        &[name, "{", l, ",period=\"", period, "\"} "],
                        unit,
                        g[idx],
                    );
                    series += 1;
                }
            } else {
                sample(out, &[name, "{", l, "} "], unit, g[g_idx]);
                series += 1;
            }
        }
    }
    RenderStats {
        series,
        folded_reps,
    }
}

/// Rewrites prometheus-client's OpenMetrics text into the 0.0.4 text format
/// of the KPI series: counters are declared under their `_total` name, and
/// `# UNIT` and `# EOF` lines go.
pub fn openmetrics_to_text(om: &str, out: &mut String) {
    let mut counters: Vec<&str> = Vec::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name);
            }
        }
    }
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_units_are_exact_decimals() {
        let mut s = String::new();
        for v in [0, 1, -1, 1_500_000, 12_345_678_901, -2_000_000] {
            micro(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0 0.000001 -0.000001 1.5 12345.678901 -2 ");
        s.clear();
        for v in [120, 10_000_000, -999_999, i64::MIN] {
            micro(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0.00012 10 -0.999999 -9223372036854.775808 ");
    }

    #[test]
    fn integers_are_written_as_format_writes_them() {
        for v in [0, 7, -7, 10, 1_000, -1_000_000, i64::MAX, i64::MIN] {
            let mut s = String::new();
            int(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }

    #[test]
    fn openmetrics_counters_become_total_families() {
        let om = "# HELP kpistream_events Input messages.\n# TYPE kpistream_events counter\nkpistream_events_total{outcome=\"applied\"} 3\n# HELP kpistream_apply_duration_seconds Time.\n# TYPE kpistream_apply_duration_seconds histogram\n# UNIT kpistream_apply_duration_seconds seconds\nkpistream_apply_duration_seconds_sum 0.5\n# EOF\n";
        let mut out = String::new();
        openmetrics_to_text(om, &mut out);
        assert_eq!(
            out,
            "# HELP kpistream_events_total Input messages.\n# TYPE kpistream_events_total counter\nkpistream_events_total{outcome=\"applied\"} 3\n# HELP kpistream_apply_duration_seconds Time.\n# TYPE kpistream_apply_duration_seconds histogram\nkpistream_apply_duration_seconds_sum 0.5\n"
        );
    }
}
