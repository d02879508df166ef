//! KPI values from a [`View`]: per-scope totals and the JSON document of
//! `docs/kpis.md` (the replay output and `GET /api/v1/kpis`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::{Calendar, EngineConfig, SECOND};
use crate::engine::parts::*;
use crate::engine::{Row, View};
use crate::event::format_timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Org,
    Rep,
    Team,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Org => "org",
            Scope::Rep => "rep",
            Scope::Team => "team",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "org" => Some(Scope::Org),
            "rep" => Some(Scope::Rep),
            "team" => Some(Scope::Team),
            _ => None,
        }
    }
}

/// The org scope's id.
pub const ORG_ID: &str = "all";

/// Summed parts and gauges of one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub parts: Vec<i64>,
    pub gauges: Vec<i64>,
}

impl Totals {
    pub fn zero(parts: usize, gauges: usize) -> Self {
        Totals {
            parts: vec![0; parts],
            gauges: vec![0; gauges],
        }
    }

    pub fn add(&mut self, parts: &[i64], gauges: &[i64]) {
        for (a, b) in self.parts.iter_mut().zip(parts) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.gauges.iter_mut().zip(gauges) {
            *a = a.wrapping_add(*b);
        }
    }
}

/// Every scope's totals, keyed by (scope, id), in output order.
pub fn totals(view: &View) -> BTreeMap<(Scope, String), Totals> {
    let mut out: BTreeMap<(Scope, String), Totals> = BTreeMap::new();
    let Some(first) = view.rows.first() else {
        return out;
    };
    let empty = Totals {
        parts: vec![0; first.parts.len()],
        gauges: vec![0; first.gauges.len()],
    };
    for row in &view.rows {
        for (scope, id) in row_scopes(row) {
            out.entry((scope, id.to_owned()))
                .or_insert_with(|| empty.clone())
                .add(&row.parts, &row.gauges);
        }
    }
    out
}

/// The scopes a row counts in: the org, its rep and its team.
fn row_scopes(row: &Row) -> impl Iterator<Item = (Scope, &str)> {
    std::iter::once((Scope::Org, ORG_ID))
        .chain(row.rep.as_deref().map(|r| (Scope::Rep, r)))
        .chain(row.team.as_deref().map(|t| (Scope::Team, t)))
}

/// Query filters of the JSON API; `None` means all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub scope: Option<Scope>,
    pub id: Option<String>,
    pub window: Option<String>,
}

/// How to read the parts of a view: window names and pipeline stages.
#[derive(Debug, Clone)]
pub struct Layout {
    pub windows: Vec<String>,
    pub stages: Vec<String>,
    n_parts: usize,
    mtd: Option<usize>,
    qtd: Option<usize>,
    /// The sliding window whose churn rate CLV uses: the one of 30 days.
    w30: Option<usize>,
}

impl Layout {
    pub fn new(cfg: &EngineConfig) -> Self {
        let n_sliding = cfg.sliding.len();
        let cal = |c: Calendar| {
            cfg.calendar
                .iter()
                .position(|&x| x == c)
                .map(|i| n_sliding + i)
        };
        Layout {
            windows: cfg.window_names(),
            stages: cfg.stages.clone(),
            n_parts: count(cfg.stages.len()),
            mtd: cal(Calendar::Month),
            qtd: cal(Calendar::Quarter),
            w30: cfg
                .sliding
                .iter()
                .position(|s| s.length == 30 * 86_400 * SECOND),
        }
    }

    pub fn parts<'a>(&self, t: &'a Totals, w: usize) -> &'a [i64] {
        &t.parts[w * self.n_parts..(w + 1) * self.n_parts]
    }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den != 0.0).then(|| num / den)
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, Value::from)
}

/// The KPI object of one scope and window.
pub fn window_kpis(layout: &Layout, t: &Totals, w: usize) -> Map<String, Value> {
    let p = layout.parts(t, w);
    let g = &t.gauges;
    let v = |i: usize| SCALARS[i].2.value(p[i]);
    let mut k = Map::new();
    for &(i, name, unit) in SCALARS {
        k.insert(name.to_owned(), unit.json(p[i]));
    }

    let mut exits = Map::new();
    let mut conversion = Map::new();
    for (s, stage) in layout.stages.iter().enumerate() {
        let counts = ExitOutcome::ALL.map(|o| p[stage_exit(s, o)]);
        if counts.iter().all(|&c| c == 0) {
            continue;
        }
        let mut by_outcome = Map::new();
        for (o, c) in ExitOutcome::ALL.iter().zip(counts) {
            if c != 0 {
                by_outcome.insert(o.as_str().to_owned(), json!(c));
            }
        }
        exits.insert(stage.clone(), Value::Object(by_outcome));
        let (adv, lost) = (counts[0] as f64, counts[2] as f64);
        conversion.insert(stage.clone(), opt(ratio(adv, adv + lost)));
    }
    k.insert("stage_exits".into(), Value::Object(exits));
    k.insert("stage_conversion".into(), Value::Object(conversion));

    let micro = |x: i64| Unit::Micro.value(x);
    let open_deals = g[G_OPEN_DEALS] as f64;
    let customers_active = g[G_CUSTOMERS_ACTIVE] as f64;
    let mrr = micro(g[G_MRR]);
    let quota_month = micro(g[G_QUOTA_MONTH]);
    let quota_quarter = micro(g[G_QUOTA_QUARTER]);
    k.insert("open_deals".into(), json!(g[G_OPEN_DEALS]));
    k.insert(
        "open_pipeline_amount".into(),
        json!(micro(g[G_OPEN_AMOUNT])),
    );
    let mut by_stage = Map::new();
    let mut amount_by_stage = Map::new();
    for (s, stage) in layout.stages.iter().enumerate() {
        let n = g[G_STAGES + 2 * s];
        if n != 0 {
            by_stage.insert(stage.clone(), json!(n));
            amount_by_stage.insert(stage.clone(), json!(micro(g[G_STAGES + 2 * s + 1])));
        }
    }
    k.insert("open_deals_by_stage".into(), Value::Object(by_stage));
    k.insert(
        "open_pipeline_amount_by_stage".into(),
        Value::Object(amount_by_stage),
    );
    k.insert("customers_active".into(), json!(g[G_CUSTOMERS_ACTIVE]));
    k.insert("mrr".into(), json!(mrr));
    k.insert("arr".into(), json!(12.0 * mrr));
    k.insert("quota_month".into(), json!(quota_month));
    k.insert("quota_quarter".into(), json!(quota_quarter));
    k.insert("meetings_upcoming".into(), json!(g[G_MEETINGS_UPCOMING]));

    let won = v(DEALS_WON);
    let win_rate = ratio(won, won + v(DEALS_LOST));
    let avg_deal_size = ratio(v(WON_AMOUNT), won);
    let avg_cycle_days = ratio(v(SALES_CYCLE_SUM), v(SALES_CYCLE_COUNT)).map(|s| s / 86_400.0);
    let churn_base =
        |p: &[i64]| customers_active - p[CUSTOMERS_NEW] as f64 + p[CUSTOMERS_CHURNED] as f64;
    let churn_rate = ratio(v(CUSTOMERS_CHURNED), churn_base(p));
    let cac = ratio(v(ACQUISITION_SPEND), v(CUSTOMERS_NEW));
    let churn_30d = layout.w30.and_then(|w| {
        let p30 = layout.parts(t, w);
        ratio(p30[CUSTOMERS_CHURNED] as f64, churn_base(p30))
    });
    let clv = ratio(mrr, customers_active).and_then(|arpa| churn_30d.and_then(|c| ratio(arpa, c)));
    let won_in = |w: Option<usize>| w.map(|w| micro(layout.parts(t, w)[WON_AMOUNT]));
    let pipeline_velocity = match (avg_deal_size, win_rate, avg_cycle_days) {
        (Some(size), Some(rate), Some(days)) => ratio(open_deals * size * rate, days),
        _ => None,
    };
    let derived: [(&str, Option<f64>); 24] = [
        (
            "meeting_booking_rate",
            ratio(v(MEETINGS_BOOKED), v(PROSPECTS_CONTACTED)),
        ),
        (
            "meeting_show_rate",
            ratio(v(MEETINGS_HELD), v(MEETINGS_DUE)),
        ),
        ("missed_meeting_gap", Some(v(MEETINGS_MISSED))),
        (
            "missed_meeting_ratio",
            ratio(v(MEETINGS_MISSED), v(MEETINGS_DUE)),
        ),
        (
            "lead_conversion_rate",
            ratio(v(LEADS_CONVERTED), v(LEADS_CREATED)),
        ),
        ("connect_rate", ratio(v(CALLS_CONNECTED), v(CALLS))),
        ("win_rate", win_rate),
        ("avg_deal_size", avg_deal_size),
        ("avg_sales_cycle_days", avg_cycle_days),
        (
            "avg_lead_response_seconds",
            ratio(v(LEAD_RESPONSE_SUM), v(LEAD_RESPONSE_COUNT)),
        ),
        ("pipeline_velocity_per_day", pipeline_velocity),
        ("activities", Some(v(CALLS) + v(EMAILS) + v(MEETINGS_HELD))),
        (
            "selling_time_ratio",
            ratio(v(SELLING_SECONDS), v(LOGGED_SECONDS)),
        ),
        ("churn_rate", churn_rate),
        ("retention_rate", churn_rate.map(|c| 1.0 - c)),
        ("upsell_rate", ratio(v(CUSTOMERS_EXPANDED), churn_base(p))),
        (
            "nps",
            ratio(
                100.0 * (v(NPS_PROMOTERS) - v(NPS_DETRACTORS)),
                v(NPS_RESPONSES),
            ),
        ),
        ("csat", ratio(v(CSAT_SCORE_SUM), v(CSAT_RESPONSES))),
        (
            "csat_satisfied_ratio",
            ratio(v(CSAT_SATISFIED), v(CSAT_RESPONSES)),
        ),
        ("cac", cac),
        ("clv", clv),
        (
            "clv_cac_ratio",
            clv.and_then(|c| cac.and_then(|a| ratio(c, a))),
        ),
        (
            "quota_attainment_month",
            won_in(layout.mtd).and_then(|w| ratio(w, quota_month)),
        ),
        (
            "quota_attainment_quarter",
            won_in(layout.qtd).and_then(|w| ratio(w, quota_quarter)),
        ),
    ];
    for (name, value) in derived {
        k.insert(name.to_owned(), opt(value));
    }
    k
}

/// Builds the JSON document of kpis.md for the scopes and windows that pass
/// `filter`, ordered by scope, id, then window as configured.
/// How many results [`document`] would hold for `filter`, without summing
/// anything: what an API query costs.
pub fn result_count(layout: &Layout, view: &View, filter: &Filter) -> usize {
    let ids: std::collections::BTreeSet<_> = view.rows.iter().flat_map(row_scopes).collect();
    let scopes = ids
        .iter()
        .filter(|(scope, id)| {
            filter.scope.is_none_or(|s| s == *scope)
                && filter.id.as_deref().is_none_or(|i| i == *id)
        })
        .count();
    let windows = layout
        .windows
        .iter()
        .filter(|w| filter.window.as_ref().is_none_or(|f| f == *w))
        .count();
    scopes * windows
}

pub fn document(layout: &Layout, view: &View, filter: &Filter) -> Value {
    let mut results = Vec::new();
    for ((scope, id), t) in totals(view) {
        if filter.scope.is_some_and(|s| s != scope) || filter.id.as_ref().is_some_and(|i| *i != id)
        {
            continue;
        }
        for (w, name) in layout.windows.iter().enumerate() {
            if filter.window.as_ref().is_some_and(|f| f != name) {
                continue;
            }
            results.push(json!({
                "scope": scope.as_str(),
                "id": id,
                "window": name,
                "kpis": Value::Object(window_kpis(layout, &t, w)),
            }));
        }
    }
    json!({
        "as_of": view.now.map(format_timestamp),
        "results": results,
    })
}
