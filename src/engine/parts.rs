//! The additive parts every KPI is computed from, and the current-state gauges.
//!
//! A part is one integer per window: a count, or a sum in micro-units
//! (seconds or base currency, times 1e6). Team, org, ratio and quantile values
//! are all computed from summed parts, never averaged.

/// How a part's integer maps to its exported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Micro-units: divide by 1e6.
    Micro,
}

impl Unit {
    pub fn value(self, raw: i64) -> f64 {
        match self {
            Unit::Count => raw as f64,
            Unit::Micro => raw as f64 / crate::event::MICRO,
        }
    }

    /// The value as JSON: counts as integers, amounts as decimals.
    pub fn json(self, raw: i64) -> serde_json::Value {
        match self {
            Unit::Count => raw.into(),
            Unit::Micro => self.value(raw).into(),
        }
    }
}

macro_rules! parts {
    ($($name:ident = $idx:expr, $key:expr, $unit:ident;)*) => {
        $(pub const $name: usize = $idx;)*
        /// The named scalar parts: (index, JSON key, unit).
        pub const SCALARS: &[(usize, &str, Unit)] = &[$(($idx, $key, Unit::$unit)),*];
    };
}

parts! {
    LEADS_CREATED = 0, "leads_created", Count;
    LEADS_CONVERTED = 1, "leads_converted", Count;
    PROSPECTS_CONTACTED = 2, "prospects_contacted", Count;
    LEAD_RESPONSE_SUM = 3, "lead_response_seconds_sum", Micro;
    LEAD_RESPONSE_COUNT = 4, "lead_response_seconds_count", Count;
    CALLS = 5, "calls", Count;
    CALLS_CONNECTED = 6, "calls_connected", Count;
    CALL_SECONDS = 7, "call_seconds", Micro;
    EMAILS = 8, "emails", Count;
    MEETINGS_BOOKED = 9, "meetings_booked", Count;
    MEETINGS_DUE = 10, "meetings_due", Count;
    MEETINGS_HELD = 11, "meetings_held", Count;
    MEETINGS_MISSED = 12, "meetings_missed", Count;
    DEALS_CREATED = 13, "deals_created", Count;
    DEALS_WON = 14, "deals_won", Count;
    DEALS_LOST = 15, "deals_lost", Count;
    WON_AMOUNT = 16, "won_amount", Micro;
    SALES_CYCLE_SUM = 17, "sales_cycle_seconds_sum", Micro;
    SALES_CYCLE_COUNT = 18, "sales_cycle_seconds_count", Count;
    SELLING_SECONDS = 19, "selling_seconds", Micro;
    LOGGED_SECONDS = 20, "logged_seconds", Micro;
    CUSTOMERS_NEW = 21, "customers_new", Count;
    MRR_NEW = 22, "mrr_new", Micro;
    CUSTOMERS_EXPANDED = 23, "customers_expanded", Count;
    MRR_EXPANSION = 24, "mrr_expansion", Micro;
    MRR_CONTRACTION = 25, "mrr_contraction", Micro;
    CUSTOMERS_CHURNED = 26, "customers_churned", Count;
    MRR_CHURNED = 27, "mrr_churned", Micro;
    NPS_RESPONSES = 28, "nps_responses", Count;
    NPS_PROMOTERS = 29, "nps_promoters", Count;
    NPS_DETRACTORS = 30, "nps_detractors", Count;
    CSAT_RESPONSES = 31, "csat_responses", Count;
    CSAT_SATISFIED = 32, "csat_satisfied", Count;
    CSAT_SCORE_SUM = 33, "csat_score_sum", Count;
    ACQUISITION_SPEND = 34, "acquisition_spend", Micro;
}

/// Upper bucket bounds of the lead response histogram, in seconds (+Inf last).
pub const LEAD_RESPONSE_BOUNDS: [i64; 7] = [60, 300, 900, 3_600, 14_400, 86_400, 259_200];
/// Upper bucket bounds of the sales cycle histogram, in days (+Inf last).
pub const SALES_CYCLE_BOUNDS_DAYS: [i64; 9] = [1, 3, 7, 14, 30, 60, 90, 180, 365];

/// First part of the lead response histogram: one non-cumulative count per
/// bucket, the last one for +Inf.
pub const LEAD_RESPONSE_HIST: usize = 35;
pub const SALES_CYCLE_HIST: usize = LEAD_RESPONSE_HIST + LEAD_RESPONSE_BOUNDS.len() + 1;
/// First stage exit part: `STAGE_EXITS + stage * 3 + outcome`.
pub const STAGE_EXITS: usize = SALES_CYCLE_HIST + SALES_CYCLE_BOUNDS_DAYS.len() + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    Advanced = 0,
    Regressed = 1,
    Lost = 2,
}

impl ExitOutcome {
    pub const ALL: [ExitOutcome; 3] = [
        ExitOutcome::Advanced,
        ExitOutcome::Regressed,
        ExitOutcome::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitOutcome::Advanced => "advanced",
            ExitOutcome::Regressed => "regressed",
            ExitOutcome::Lost => "lost",
        }
    }
}

pub fn stage_exit(stage: usize, outcome: ExitOutcome) -> usize {
    STAGE_EXITS + stage * 3 + outcome as usize
}

/// Number of parts for a pipeline of `stages` stages.
pub fn count(stages: usize) -> usize {
    STAGE_EXITS + stages * 3
}

/// The histogram bucket of a lead response time in microseconds.
pub fn lead_response_bucket(micros: i64) -> usize {
    LEAD_RESPONSE_BOUNDS
        .iter()
        .position(|&b| micros <= b * crate::config::SECOND)
        .unwrap_or(LEAD_RESPONSE_BOUNDS.len())
}

/// The histogram bucket of a sales cycle in microseconds.
pub fn sales_cycle_bucket(micros: i64) -> usize {
    const DAY: i64 = 86_400 * crate::config::SECOND;
    SALES_CYCLE_BOUNDS_DAYS
        .iter()
        .position(|&d| micros <= d * DAY)
        .unwrap_or(SALES_CYCLE_BOUNDS_DAYS.len())
}

// Current-state gauges (not windowed), per (rep, team) pair.
pub const G_OPEN_DEALS: usize = 0;
pub const G_OPEN_AMOUNT: usize = 1;
pub const G_CUSTOMERS_ACTIVE: usize = 2;
pub const G_MRR: usize = 3;
pub const G_QUOTA_MONTH: usize = 4;
pub const G_QUOTA_QUARTER: usize = 5;
pub const G_MEETINGS_UPCOMING: usize = 6;
/// Per stage: open deals at `G_STAGES + 2 * s`, their amount at `+ 1`.
pub const G_STAGES: usize = 7;

pub fn gauge_count(stages: usize) -> usize {
    G_STAGES + 2 * stages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SECOND;

    #[test]
    fn layout_is_dense_and_unique() {
        for (i, (idx, _, _)) in SCALARS.iter().enumerate() {
            assert_eq!(*idx, i);
        }
        assert_eq!(LEAD_RESPONSE_HIST, SCALARS.len());
        assert_eq!(count(5), 35 + 8 + 10 + 15);
    }

    #[test]
    fn histogram_bounds_are_inclusive() {
        assert_eq!(lead_response_bucket(60 * SECOND), 0);
        assert_eq!(lead_response_bucket(60 * SECOND + 1), 1);
        assert_eq!(lead_response_bucket(259_200 * SECOND + 1), 7);
        assert_eq!(sales_cycle_bucket(86_400 * SECOND), 0);
        assert_eq!(sales_cycle_bucket(86_400 * SECOND + 1), 1);
        assert_eq!(sales_cycle_bucket(366 * 86_400 * SECOND), 9);
    }
}
