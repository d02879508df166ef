#!/usr/bin/env python3
"""Generates kpistream's Prometheus mixin: recording rules, alert rules,
their promtool unit tests, the Kubernetes PrometheusRule and the Grafana
dashboards, from the tables below (one place for every KPI formula).

    python3 deploy/generate.py          # rewrite the files
    python3 deploy/generate.py --check  # fail if a file is not up to date

Only the standard library is used; YAML is written by hand (JSON strings
are valid YAML scalars).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "kpistream-prometheus"}
DOCS = "https://github.com/kpistream/kpistream/blob/main/docs/alerts.md"

# The additive parts exported per (rep, team, window): metric suffix.
PARTS = [
    "leads_created", "leads_converted", "prospects_contacted",
    "lead_response_seconds_sum", "lead_response_seconds_count",
    "calls", "calls_connected", "call_duration_seconds", "emails",
    "meetings_booked", "meetings_due", "meetings_held", "meetings_missed",
    "deals_created", "deals_won", "deals_lost", "won_amount",
    "sales_cycle_seconds_sum", "sales_cycle_seconds_count",
    "selling_time_seconds", "logged_time_seconds",
    "customers_new", "mrr_new", "customers_expanded", "mrr_expansion",
    "mrr_contraction", "customers_churned", "mrr_churned",
    "nps_responses", "nps_promoters", "nps_detractors",
    "csat_responses", "csat_satisfied", "csat_score", "acquisition_spend",
]
# Current-state gauges per (rep, team), no window.
CURRENT = ["open_deals", "open_pipeline_amount", "customers_active", "mrr",
           "meetings_upcoming", "quota"]

# Aggregation levels: (prefix, labels kept, selector dropping rows that do
# not belong to the level: acquisition spend has no rep, and no team when
# the event names none).
LEVELS = [
    ("rep_team", ["rep", "team"], '{rep!=""}'),
    ("team", ["team"], '{team!=""}'),
    ("org", [], ""),
]


def sel(metric, selector, extra=""):
    if not selector and not extra:
        return metric
    inner = ",".join(x for x in [selector.strip("{}"), extra] if x)
    return f"{metric}{{{inner}}}"


def by(labels, *more):
    return ", ".join(list(labels) + list(more))


def recording_rules():
    """(group name, [(record, expr)]) per group."""
    groups = []
    for prefix, labels, selector in LEVELS:
        w = f"{prefix}_window"
        rules = []
        for p in PARTS:
            if p == "acquisition_spend" and "rep" in labels:
                continue  # spend belongs to teams and the org only
            rules.append((f"{w}:sales_{p}:sum", f"sum by ({by(labels, 'window')}) ({sel('sales_' + p, selector)})"))
        for h in ["lead_response_seconds", "sales_cycle_seconds"]:
            rules.append((f"{w}:sales_{h}_bucket:sum",
                          f"sum by ({by(labels, 'window', 'le')}) ({sel('sales_' + h + '_bucket', selector)})"))
        rules.append((f"{w}:sales_stage_exits:sum",
                      f"sum by ({by(labels, 'window', 'stage', 'outcome')}) ({sel('sales_stage_exits', selector)})"))
        for c in CURRENT:
            extra = ["stage"] if c.startswith("open_") else (["period"] if c == "quota" else [])
            rules.append((f"{prefix}:sales_{c}:sum", f"sum by ({by(labels, *extra)}) ({sel('sales_' + c, selector)})"))
            if extra == ["stage"]:
                rules.append((f"{prefix}:sales_{c}_total:sum", f"sum by ({by(labels)}) ({sel('sales_' + c, selector)})"))
        s = lambda p: f"{w}:sales_{p}:sum"  # noqa: E731
        on = f"on({by(labels)})"

        def ratio(num, den):
            return f"{num} / ({den} != 0)"

        rules += [
            (f"{w}:meeting_booking_rate", ratio(s("meetings_booked"), s("prospects_contacted"))),
            (f"{w}:meeting_show_rate", ratio(s("meetings_held"), s("meetings_due"))),
            (f"{w}:missed_meeting_ratio", ratio(s("meetings_missed"), s("meetings_due"))),
            (f"{w}:lead_conversion_rate", ratio(s("leads_converted"), s("leads_created"))),
            (f"{w}:connect_rate", ratio(s("calls_connected"), s("calls"))),
            (f"{w}:win_rate", ratio(s("deals_won"), f"({s('deals_won')} + {s('deals_lost')})")),
            (f"{w}:avg_deal_size", ratio(s("won_amount"), s("deals_won"))),
            (f"{w}:avg_sales_cycle_days",
             f"{ratio(s('sales_cycle_seconds_sum'), s('sales_cycle_seconds_count'))} / 86400"),
            (f"{w}:avg_lead_response_seconds",
             ratio(s("lead_response_seconds_sum"), s("lead_response_seconds_count"))),
            (f"{w}:activities", f"{s('calls')} + {s('emails')} + {s('meetings_held')}"),
            (f"{w}:selling_time_ratio", ratio(s("selling_time_seconds"), s("logged_time_seconds"))),
            (f"{w}:nps", f"100 * ({s('nps_promoters')} - {s('nps_detractors')}) / ({s('nps_responses')} != 0)"),
            (f"{w}:csat", ratio(s("csat_score"), s("csat_responses"))),
            (f"{w}:csat_satisfied_ratio", ratio(s("csat_satisfied"), s("csat_responses"))),
            # Customers at the window's start: active now, minus new, plus churned.
            (f"{w}:customers_at_start",
             f"{prefix}:sales_customers_active:sum + {on} group_right() "
             f"({s('customers_churned')} - {s('customers_new')})"),
            (f"{w}:churn_rate", ratio(s("customers_churned"), f"{w}:customers_at_start")),
            (f"{w}:retention_rate", f"1 - {w}:churn_rate"),
            (f"{w}:upsell_rate", ratio(s("customers_expanded"), f"{w}:customers_at_start")),
            (f"{w}:stage_conversion",
             f'sum by ({by(labels, "window", "stage")}) ({w}:sales_stage_exits:sum{{outcome="advanced"}}) / '
             f'(sum by ({by(labels, "window", "stage")}) ({w}:sales_stage_exits:sum{{outcome=~"advanced|lost"}}) != 0)'),
            (f"{w}:pipeline_velocity_per_day",
             f"{prefix}:sales_open_deals_total:sum * {on} group_right() "
             f"({w}:avg_deal_size * {w}:win_rate / ({w}:avg_sales_cycle_days != 0))"),
            (f"{prefix}:arr", f"12 * {prefix}:sales_mrr:sum"),
            (f"{prefix}:clv",
             f"({prefix}:sales_mrr:sum / ({prefix}:sales_customers_active:sum != 0)) / {on} "
             f'({w}:churn_rate{{window="30d"}} != 0)'),
            (f"{w}:quota_attainment_month",
             f'{s("won_amount")}{{window="mtd"}} / {on} group_left() ({prefix}:sales_quota:sum{{period="month"}} != 0)'),
            (f"{w}:quota_attainment_quarter",
             f'{s("won_amount")}{{window="qtd"}} / {on} group_left() ({prefix}:sales_quota:sum{{period="quarter"}} != 0)'),
        ]
        if prefix != "rep_team":
            rules += [
                (f"{w}:cac", ratio(s("acquisition_spend"), s("customers_new"))),
                (f"{w}:clv_cac_ratio", f"{prefix}:clv / {on} group_right() ({w}:cac != 0)"),
            ]
        for q in ["0.5", "0.9"]:
            for h in ["lead_response_seconds", "sales_cycle_seconds"]:
                name = "p50" if q == "0.5" else "p90"
                rules.append((f"{w}:sales_{h}:{name}",
                              f"histogram_quantile({q}, {w}:sales_{h}_bucket:sum) "
                              f"and {on.replace(')', ', window)') if labels else 'on(window)'} "
                              f"({s(h + '_count')} > 0)"))
        groups.append((f"kpistream-{prefix.replace('_', '-')}", rules))
    return groups


# Alerts: name, expr, for, severity, summary, description, parameters (doc).
ALERTS = [
    # Business warnings.
    ("SalesMissedMeetingGapRep",
     'rep_team_window:missed_meeting_ratio{window="7d",rep!~"other|unassigned"} > 0.2 and rep_team_window:sales_meetings_due:sum{window="7d"} >= 5',
     "1h", "warning", "Rep {{ $labels.rep }} misses many meetings",
     "{{ $labels.rep }} ({{ $labels.team }}) missed {{ $value | humanizePercentage }} of the meetings due over 7 days.",
     "ratio above 20% with at least 5 meetings due, for 1h"),
    ("SalesMissedMeetingGapTeam",
     'team_window:missed_meeting_ratio{window="7d"} > 0.15 and team_window:sales_meetings_due:sum{window="7d"} >= 20',
     "1h", "warning", "Team {{ $labels.team }} misses many meetings",
     "Team {{ $labels.team }} missed {{ $value | humanizePercentage }} of the meetings due over 7 days.",
     "ratio above 15% with at least 20 meetings due, for 1h"),
    ("SalesCallsBelowTarget",
     'rep_team_window:sales_calls:sum{window="7d",rep!~"other|unassigned"} < 50',
     "6h", "warning", "Rep {{ $labels.rep }} is below the weekly call target",
     "{{ $labels.rep }} ({{ $labels.team }}) logged {{ $value }} calls over 7 days (target 50).",
     "fewer than 50 calls over 7 days, for 6h"),
    ("SalesMeetingsHeldBelowTarget",
     'rep_team_window:sales_meetings_held:sum{window="7d",rep!~"other|unassigned"} < 5',
     "6h", "warning", "Rep {{ $labels.rep }} is below the weekly meeting target",
     "{{ $labels.rep }} ({{ $labels.team }}) held {{ $value }} meetings over 7 days (target 5).",
     "fewer than 5 meetings held over 7 days, for 6h"),
    ("SalesMeetingBookingRateFalling",
     'team_window:meeting_booking_rate{window="7d"} < ignoring(window) group_left() (0.8 * team_window:meeting_booking_rate{window="30d"})',
     "6h", "warning", "Team {{ $labels.team }} books fewer meetings than usual",
     "Team {{ $labels.team }}'s 7-day meeting booking rate is {{ $value | humanizePercentage }}, below 80% of its own 30-day rate.",
     "7-day rate below 80% of the 30-day rate, for 6h"),
    ("SalesWinRateFalling",
     '(team_window:win_rate{window="7d"} < ignoring(window) group_left() (0.8 * team_window:win_rate{window="30d"})) and on(team) '
     '(team_window:sales_deals_won:sum{window="7d"} + team_window:sales_deals_lost:sum{window="7d"} >= 5)',
     "6h", "warning", "Team {{ $labels.team }} wins fewer deals than usual",
     "Team {{ $labels.team }}'s 7-day win rate is {{ $value | humanizePercentage }}, below 80% of its own 30-day rate.",
     "7-day rate below 80% of the 30-day rate with at least 5 closed deals, for 6h"),
    ("SalesLeadResponseSlow",
     'team_window:avg_lead_response_seconds{window="24h"} > 3600',
     "2h", "warning", "Team {{ $labels.team }} answers leads slowly",
     "Team {{ $labels.team }}'s average first response to new leads over 24h is {{ $value | humanizeDuration }} (target 1h).",
     "average above 1h over 24h, for 2h"),
    ("SalesChurnSpike",
     'org_window:sales_customers_churned:sum{window="7d"} > ignoring(window) group_left() (2 * org_window:sales_customers_churned:sum{window="30d"} * 7 / 30) '
     'and org_window:sales_customers_churned:sum{window="7d"} >= 3',
     "1h", "warning", "Customer churn is spiking",
     "{{ $value }} customers churned over 7 days, more than twice the 30-day weekly average.",
     "7-day churned count above twice the 30-day weekly average and at least 3, for 1h"),
    ("SalesQuotaPacingBehind",
     'team_window:quota_attainment_month{window="mtd"} < 0.8 * scalar((day_of_month() - 1 + hour() / 24) / days_in_month()) '
     'and on() (day_of_month() >= 5)',
     "12h", "warning", "Team {{ $labels.team }} is behind its monthly quota pace",
     "Team {{ $labels.team }} has reached {{ $value | humanizePercentage }} of its monthly quota, less than 80% of the month's elapsed share.",
     "attainment below 80% of the month's elapsed share, from the 5th, for 12h"),
    ("SalesSellingTimeLow",
     'rep_team_window:selling_time_ratio{window="7d",rep!~"other|unassigned"} < 0.6',
     "6h", "warning", "Rep {{ $labels.rep }} spends little time selling",
     "{{ $labels.rep }} ({{ $labels.team }}) spent {{ $value | humanizePercentage }} of logged time selling over 7 days (target 60%).",
     "ratio below 60% over 7 days, for 6h"),
    # Operational.
    ("KpistreamDown", 'up{job="kpistream"} == 0', "2m", "critical",
     "kpistream instance {{ $labels.instance }} is down",
     "Prometheus cannot scrape {{ $labels.instance }}; its partitions move to the other instances after the session timeout.",
     "target down for 2m"),
    ("KpistreamConsumerLagGrowing",
     "sum by (instance, topic, partition) (deriv(kpistream_consumer_lag_messages[10m])) > 0 "
     "and sum by (instance, topic, partition) (kpistream_consumer_lag_messages) > 1000",
     "15m", "warning", "kpistream falls behind on {{ $labels.topic }}/{{ $labels.partition }}",
     "The consumer lag of {{ $labels.topic }}/{{ $labels.partition }} grows by {{ $value | humanize }} messages/s.",
     "lag above 1000 and growing, for 15m"),
    ("KpistreamNoEventsApplied",
     'sum by (instance) (rate(kpistream_events_total{outcome="applied"}[10m])) == 0 '
     "and sum by (instance) (kpistream_consumer_lag_messages) > 0",
     "10m", "critical", "kpistream {{ $labels.instance }} applies no events",
     "{{ $labels.instance }} applied no event in 10 minutes while messages are waiting.",
     "no applied event with lag above 0, for 10m"),
    ("KpistreamSnapshotStale",
     "max by (instance, topic, partition) (kpistream_snapshot_age_seconds) > 600",
     "5m", "warning", "Snapshots of {{ $labels.topic }}/{{ $labels.partition }} are stale",
     "The last snapshot of {{ $labels.topic }}/{{ $labels.partition }} is {{ $value | humanizeDuration }} old; committed offsets stop advancing with it.",
     "older than 10m, for 5m"),
    ("KpistreamSnapshotFailing",
     "increase(kpistream_snapshot_failures_total[15m]) > 0",
     "0m", "warning", "kpistream {{ $labels.instance }} fails to write snapshots",
     "{{ $value | humanize }} snapshots failed in 15 minutes on {{ $labels.instance }}.",
     "any failure in 15m"),
    ("KpistreamDeadLetterRate",
     'sum by (instance) (rate(kpistream_events_total{outcome="rejected"}[10m])) '
     "/ sum by (instance) (rate(kpistream_events_total[10m])) > 0.01",
     "15m", "warning", "Many rejected messages on {{ $labels.instance }}",
     "{{ $value | humanizePercentage }} of the messages are rejected to the dead-letter topic.",
     "more than 1% rejected over 10m, for 15m"),
    ("KpistreamRestoreFallback",
     "increase(kpistream_snapshot_restore_fallbacks_total[1h]) > 0",
     "0m", "warning", "kpistream {{ $labels.instance }} skipped corrupt snapshots",
     "{{ $value | humanize }} snapshots could not be read in the last hour and older ones were used.",
     "any fallback in 1h"),
    ("KpistreamWebhookProduceFailing",
     'sum by (instance, crm) (increase(kpistream_webhook_requests_total{result="produce_failed"}[15m])) > 0',
     "0m", "warning", "{{ $labels.crm }} webhooks are answered 503 on {{ $labels.instance }}",
     "{{ $value | humanize }} {{ $labels.crm }} webhook requests could not be stored in 15 minutes; the CRM retries them.",
     "any produce failure in 15m"),
    ("KpistreamWebhookRefused",
     'sum by (instance, crm) (increase(kpistream_webhook_requests_total{result=~"missing_credentials|bad_signature|expired"}[15m])) > 10',
     "0m", "warning", "{{ $labels.crm }} webhook requests are refused on {{ $labels.instance }}",
     "{{ $value | humanize }} {{ $labels.crm }} webhook requests were refused (401) in 15 minutes.",
     "more than 10 refusals in 15m"),
]


def alert_rules():
    out = []
    for name, expr, dur, sev, summary, desc, _ in ALERTS:
        out.append({"alert": name, "expr": expr, "for": dur,
                    "labels": {"severity": sev},
                    "annotations": {"summary": summary, "description": desc,
                                    "runbook_url": f"{DOCS}#{name.lower()}"}})
    return out


def yaml_rules(groups_rec, alerts, indent=""):
    lines = [f"{indent}groups:"]
    for name, rules in groups_rec:
        lines += [f"{indent}  - name: {name}", f"{indent}    rules:"]
        for rec, expr in rules:
            lines += [f"{indent}      - record: {rec}", f"{indent}        expr: {json.dumps(expr)}"]
    lines += [f"{indent}  - name: kpistream-alerts", f"{indent}    rules:"]
    for a in alerts:
        lines += [f"{indent}      - alert: {a['alert']}", f"{indent}        expr: {json.dumps(a['expr'])}",
                  f"{indent}        for: {a['for']}", f"{indent}        labels:",
                  f"{indent}          severity: {a['labels']['severity']}", f"{indent}        annotations:"]
        for k, v in a["annotations"].items():
            lines.append(f"{indent}          {k}: {json.dumps(v)}")
    return "\n".join(lines) + "\n"


# ---- promtool unit tests ------------------------------------------------
# Two reps in team t1, one in t2, one window (7d), plus the current state.
# Values per rep and part; expected values are computed here from the
# formulas of kpis.md, independently of the PromQL above.
REPS = [("r1", "t1"), ("r2", "t1"), ("r3", "t2")]


def part_value(p, i):
    """A distinct, non-zero value per part and rep."""
    return (PARTS.index(p) + 2) * (i + 1) + i * 3


def quantile(q, buckets):
    """Prometheus's histogram_quantile over (upper bound, cumulative count)."""
    rank = q * buckets[-1][1]
    prev_upper, prev_count = 0.0, 0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return prev_upper
            return prev_upper + (upper - prev_upper) * (rank - prev_count) / (count - prev_count)
        prev_upper, prev_count = upper, count
    return prev_upper


def recording_tests():
    series = []
    W = "7d"
    for i, (r, t) in enumerate(REPS):
        lab = f'rep="{r}",team="{t}",window="{W}"'
        for p in PARTS:
            series.append((f"sales_{p}{{{lab}}}", part_value(p, i)))
        for stage in ["demo"]:
            for o, v in [("advanced", 3 + i), ("lost", 1 + i), ("regressed", i)]:
                series.append((f'sales_stage_exits{{{lab},stage="{stage}",outcome="{o}"}}', v))
        for le, v in [("60", 1 + i), ("300", 2 + i), ("+Inf", 4 + i)]:
            series.append((f'sales_lead_response_seconds_bucket{{{lab},le="{le}"}}', v))
        for le, v in [("86400", 1), ("604800", 2 + i), ("+Inf", 3 + i)]:
            series.append((f'sales_sales_cycle_seconds_bucket{{{lab},le="{le}"}}', v))
        cur = f'rep="{r}",team="{t}"'
        series.append((f'sales_open_deals{{{cur},stage="demo"}}', 2 + i))
        series.append((f'sales_open_pipeline_amount{{{cur},stage="demo"}}', 1000 * (i + 1)))
        series.append((f"sales_customers_active{{{cur}}}", 40 + i))
        series.append((f"sales_mrr{{{cur}}}", 5000 + 100 * i))
        series.append((f"sales_meetings_upcoming{{{cur}}}", i + 1))
        series.append((f'sales_quota{{{cur},period="month"}}', 10000 * (i + 1)))
        series.append((f'sales_quota{{{cur},period="quarter"}}', 30000 * (i + 1)))
    # 30d, mtd and qtd values for the churn, clv and quota rules.
    for i, (r, t) in enumerate(REPS):
        for w in ["30d", "mtd", "qtd"]:
            lab = f'rep="{r}",team="{t}",window="{w}"'
            for p in ["customers_churned", "customers_new", "won_amount"]:
                series.append((f"sales_{p}{{{lab}}}", part_value(p, i) + 1))
    # A window where r1 closed no deal and logged no time: ratios with a
    # zero denominator give no sample (the API's null).
    for p in ["deals_won", "deals_lost", "selling_time_seconds", "logged_time_seconds"]:
        series.append((f'sales_{p}{{rep="r1",team="t1",window="1h"}}', 0))
    # Org-only spend (no rep, no team).
    series.append(('sales_acquisition_spend{rep="",team="",window="7d"}', 700))

    def members(scope, key):
        """Indices in REPS of the reps a scope sums."""
        return [i for i, (r, t) in enumerate(REPS) if scope == "org" or (scope == "team" and t == key) or r == key]

    def val(p, i, w="7d"):
        return part_value(p, i) + (0 if w == "7d" else 1)

    def scope_sum(scope, key, p, w="7d"):
        idx = members(scope, key)
        total = sum(val(p, i, w) for i in idx)
        if p == "acquisition_spend" and scope == "org" and w == "7d":
            total += 700
        return total

    def cur_sum(scope, key, what):
        idx = members(scope, key)
        f = {"customers_active": lambda i: 40 + i, "mrr": lambda i: 5000 + 100 * i,
             "quota_month": lambda i: 10000 * (i + 1), "open_deals": lambda i: 2 + i}[what]
        return sum(f(i) for i in idx)

    exp = []  # (expr, labels, value)
    for prefix, scope, key, labels in [("rep_team", "rep", "r1", 'rep="r1",team="t1"'),
                                       ("team", "team", "t1", 'team="t1"'), ("org", "org", "all", "")]:
        w = f"{prefix}_window"
        wl = (labels + "," if labels else "") + 'window="7d"'
        S = lambda p: scope_sum(scope, key, p)  # noqa: E731
        for p in PARTS:
            if p == "acquisition_spend" and scope == "rep":
                continue
            exp.append((f"{w}:sales_{p}:sum", wl, S(p)))
        exp += [
            (f"{w}:meeting_booking_rate", wl, S("meetings_booked") / S("prospects_contacted")),
            (f"{w}:meeting_show_rate", wl, S("meetings_held") / S("meetings_due")),
            (f"{w}:missed_meeting_ratio", wl, S("meetings_missed") / S("meetings_due")),
            (f"{w}:lead_conversion_rate", wl, S("leads_converted") / S("leads_created")),
            (f"{w}:connect_rate", wl, S("calls_connected") / S("calls")),
            (f"{w}:win_rate", wl, S("deals_won") / (S("deals_won") + S("deals_lost"))),
            (f"{w}:avg_deal_size", wl, S("won_amount") / S("deals_won")),
            (f"{w}:avg_sales_cycle_days", wl, S("sales_cycle_seconds_sum") / S("sales_cycle_seconds_count") / 86400),
            (f"{w}:avg_lead_response_seconds", wl, S("lead_response_seconds_sum") / S("lead_response_seconds_count")),
            (f"{w}:activities", wl, S("calls") + S("emails") + S("meetings_held")),
            (f"{w}:selling_time_ratio", wl, S("selling_time_seconds") / S("logged_time_seconds")),
            (f"{w}:nps", wl, 100 * (S("nps_promoters") - S("nps_detractors")) / S("nps_responses")),
            (f"{w}:csat", wl, S("csat_score") / S("csat_responses")),
            (f"{w}:csat_satisfied_ratio", wl, S("csat_satisfied") / S("csat_responses")),
        ]
        active = cur_sum(scope, key, "customers_active")
        base = active - S("customers_new") + S("customers_churned")
        churn = S("customers_churned") / base
        exp += [
            (f"{w}:customers_at_start", wl, base),
            (f"{w}:churn_rate", wl, churn),
            (f"{w}:retention_rate", wl, 1 - churn),
            (f"{w}:upsell_rate", wl, S("customers_expanded") / base),
        ]
        n_idx = members(scope, key)
        adv = sum(3 + i for i in n_idx)
        lost = sum(1 + i for i in n_idx)
        exp.append((f"{w}:stage_conversion", wl + ',stage="demo"', adv / (adv + lost)))
        win = S("deals_won") / (S("deals_won") + S("deals_lost"))
        size = S("won_amount") / S("deals_won")
        days = S("sales_cycle_seconds_sum") / S("sales_cycle_seconds_count") / 86400
        exp.append((f"{w}:pipeline_velocity_per_day", wl, cur_sum(scope, key, "open_deals") * (size * win / days)))
        mrr = cur_sum(scope, key, "mrr")
        exp.append((f"{prefix}:arr", labels, 12 * mrr))
        s30 = lambda p: scope_sum(scope, key, p, "30d")  # noqa: E731
        churn30 = s30("customers_churned") / (active - s30("customers_new") + s30("customers_churned"))
        clv = (mrr / active) / churn30
        exp.append((f"{prefix}:clv", labels, clv))
        mtd = (labels + "," if labels else "") + 'window="mtd"'
        exp.append((f"{w}:quota_attainment_month", mtd,
                    scope_sum(scope, key, "won_amount", "mtd") / cur_sum(scope, key, "quota_month")))
        if scope != "rep":
            cac = S("acquisition_spend") / S("customers_new")
            exp.append((f"{w}:cac", wl, cac))
            exp.append((f"{w}:clv_cac_ratio", wl, clv / cac))
        lead = [(60, sum(1 + i for i in n_idx)), (300, sum(2 + i for i in n_idx)),
                (float("inf"), sum(4 + i for i in n_idx))]
        cycle = [(86400, len(n_idx)), (604800, sum(2 + i for i in n_idx)),
                 (float("inf"), sum(3 + i for i in n_idx))]
        for h, buckets in [("lead_response_seconds", lead), ("sales_cycle_seconds", cycle)]:
            for q, qn in [(0.5, "p50"), (0.9, "p90")]:
                exp.append((f"{w}:sales_{h}:{qn}", wl, quantile(q, buckets)))
            le = "60" if h.startswith("lead") else "86400"
            exp.append((f"{w}:sales_{h}_bucket:sum", wl + f',le="{le}"', buckets[0][1]))
        exp.append((f"{w}:sales_stage_exits:sum", wl + ',stage="demo",outcome="advanced"', adv))
        cl = (labels + "," if labels else "")
        for c, v in [("customers_active", active), ("mrr", mrr),
                     ("meetings_upcoming", sum(i + 1 for i in n_idx))]:
            exp.append((f"{prefix}:sales_{c}:sum", labels, v))
        for c, v in [("open_deals", cur_sum(scope, key, "open_deals")),
                     ("open_pipeline_amount", sum(1000 * (i + 1) for i in n_idx))]:
            exp.append((f"{prefix}:sales_{c}:sum", cl + 'stage="demo"', v))
            exp.append((f"{prefix}:sales_{c}_total:sum", labels, v))
        for period, per in [("month", 10000), ("quarter", 30000)]:
            exp.append((f"{prefix}:sales_quota:sum", cl + f'period="{period}"', sum(per * (i + 1) for i in n_idx)))
        qtd = cl + 'window="qtd"'
        exp.append((f"{w}:quota_attainment_quarter", qtd,
                    scope_sum(scope, key, "won_amount", "qtd") / sum(30000 * (i + 1) for i in n_idx)))
    lines = []
    for s_, v in series:
        lines += [f"      - series: {json.dumps(s_)}", f"        values: \"{v}x3\""]
    lines.append("    promql_expr_test:")
    for name in ["rep_team_window:win_rate", "rep_team_window:selling_time_ratio"]:
        lines += [f"      - expr: {json.dumps(name + '{window=' + chr(34) + '1h' + chr(34) + '}')}",
                  "        eval_time: 1m", "        exp_samples: []"]
    for name, labels, value in exp:
        full = f"{name}{{{labels}}}" if labels else name
        lines += [f"      - expr: {json.dumps(full)}", "        eval_time: 1m", "        exp_samples:",
                  f"          - labels: {json.dumps(full)}", f"            value: {value!r}"]
    return lines, {name for name, _, _ in exp}


# Per alert: input series (name{labels}, "values") that make it fire and
# that do not, the alert's expected labels when firing, and the eval time.
def alert_cases():
    t1 = 'team="t1"'
    r1 = 'rep="r1",team="t1"'
    up = lambda v: [('up{job="kpistream",instance="k1"}', v)]  # noqa: E731
    return {
        "SalesMissedMeetingGapRep": (
            [(f'rep_team_window:missed_meeting_ratio{{{r1},window="7d"}}', "0.5x120"),
             (f'rep_team_window:sales_meetings_due:sum{{{r1},window="7d"}}', "8x120")],
            [(f'rep_team_window:missed_meeting_ratio{{{r1},window="7d"}}', "0.1x120"),
             (f'rep_team_window:sales_meetings_due:sum{{{r1},window="7d"}}', "8x120")],
            f'{r1},window="7d"', "90m"),
        "SalesMissedMeetingGapTeam": (
            [(f'team_window:missed_meeting_ratio{{{t1},window="7d"}}', "0.3x120"),
             (f'team_window:sales_meetings_due:sum{{{t1},window="7d"}}', "40x120")],
            [(f'team_window:missed_meeting_ratio{{{t1},window="7d"}}', "0.3x120"),
             (f'team_window:sales_meetings_due:sum{{{t1},window="7d"}}', "10x120")],
            f'{t1},window="7d"', "90m"),
        "SalesCallsBelowTarget": (
            [(f'rep_team_window:sales_calls:sum{{{r1},window="7d"}}', "20x480")],
            [(f'rep_team_window:sales_calls:sum{{{r1},window="7d"}}', "80x480")],
            f'{r1},window="7d"', "7h"),
        "SalesMeetingsHeldBelowTarget": (
            [(f'rep_team_window:sales_meetings_held:sum{{{r1},window="7d"}}', "2x480")],
            [(f'rep_team_window:sales_meetings_held:sum{{{r1},window="7d"}}', "6x480")],
            f'{r1},window="7d"', "7h"),
        "SalesMeetingBookingRateFalling": (
            [(f'team_window:meeting_booking_rate{{{t1},window="7d"}}', "0.2x480"),
             (f'team_window:meeting_booking_rate{{{t1},window="30d"}}', "0.4x480")],
            [(f'team_window:meeting_booking_rate{{{t1},window="7d"}}', "0.35x480"),
             (f'team_window:meeting_booking_rate{{{t1},window="30d"}}', "0.4x480")],
            f'{t1},window="7d"', "7h"),
        "SalesWinRateFalling": (
            # The win rates come from the recording rules: 1/10 and 3/10.
            [(f'team_window:sales_deals_won:sum{{{t1},window="7d"}}', "1x480"),
             (f'team_window:sales_deals_lost:sum{{{t1},window="7d"}}', "9x480"),
             (f'team_window:sales_deals_won:sum{{{t1},window="30d"}}', "3x480"),
             (f'team_window:sales_deals_lost:sum{{{t1},window="30d"}}', "7x480")],
            # As low, but on 3 closed deals only.
            [(f'team_window:sales_deals_won:sum{{{t1},window="7d"}}', "0x480"),
             (f'team_window:sales_deals_lost:sum{{{t1},window="7d"}}', "3x480"),
             (f'team_window:sales_deals_won:sum{{{t1},window="30d"}}', "3x480"),
             (f'team_window:sales_deals_lost:sum{{{t1},window="30d"}}', "7x480")],
            f'{t1},window="7d"', "7h"),
        "SalesLeadResponseSlow": (
            [(f'team_window:avg_lead_response_seconds{{{t1},window="24h"}}', "7200x180")],
            [(f'team_window:avg_lead_response_seconds{{{t1},window="24h"}}', "900x180")],
            f'{t1},window="24h"', "150m"),
        "SalesChurnSpike": (
            [('org_window:sales_customers_churned:sum{window="7d"}', "6x120"),
             ('org_window:sales_customers_churned:sum{window="30d"}', "8x120")],
            [('org_window:sales_customers_churned:sum{window="7d"}', "3x120"),
             ('org_window:sales_customers_churned:sum{window="30d"}', "12x120")],
            'window="7d"', "90m"),
        # Evaluated on 5 January 1970 at 14:00 (4 days and 14h elapsed:
        # 14.8% of the month, 11.8% after the 80% margin): 5% attained is
        # behind, 50% is not.
        "SalesQuotaPacingBehind": (
            [(f'team_window:quota_attainment_month{{{t1},window="mtd"}}', "0.05x700")],
            [(f'team_window:quota_attainment_month{{{t1},window="mtd"}}', "0.5x700")],
            f'{t1},window="mtd"', "110h", "10m"),
        "SalesSellingTimeLow": (
            [(f'rep_team_window:selling_time_ratio{{{r1},window="7d"}}', "0.4x480")],
            [(f'rep_team_window:selling_time_ratio{{{r1},window="7d"}}', "0.7x480")],
            f'{r1},window="7d"', "7h"),
        "KpistreamDown": (up("0x10"), up("1x10"), 'job="kpistream",instance="k1"', "5m"),
        "KpistreamConsumerLagGrowing": (
            [('kpistream_consumer_lag_messages{instance="k1",topic="crm-events",partition="0"}', "2000+100x60")],
            [('kpistream_consumer_lag_messages{instance="k1",topic="crm-events",partition="0"}', "5000-50x60")],
            'instance="k1",topic="crm-events",partition="0"', "40m"),
        "KpistreamNoEventsApplied": (
            [('kpistream_events_total{instance="k1",outcome="applied",reason=""}', "100x60"),
             ('kpistream_consumer_lag_messages{instance="k1",topic="crm-events",partition="0"}', "500x60")],
            [('kpistream_events_total{instance="k1",outcome="applied",reason=""}', "100+10x60"),
             ('kpistream_consumer_lag_messages{instance="k1",topic="crm-events",partition="0"}', "500x60")],
            'instance="k1"', "40m"),
        "KpistreamSnapshotStale": (
            [('kpistream_snapshot_age_seconds{instance="k1",topic="crm-events",partition="0"}', "900x20")],
            [('kpistream_snapshot_age_seconds{instance="k1",topic="crm-events",partition="0"}', "30x20")],
            'instance="k1",topic="crm-events",partition="0"', "10m"),
        "KpistreamSnapshotFailing": (
            [('kpistream_snapshot_failures_total{instance="k1"}', "0 0 1 2 2 2")],
            [('kpistream_snapshot_failures_total{instance="k1"}', "3x5")],
            'instance="k1"', "4m"),
        "KpistreamDeadLetterRate": (
            [('kpistream_events_total{instance="k1",outcome="applied",reason=""}', "0+100x40"),
             ('kpistream_events_total{instance="k1",outcome="rejected",reason="invalid_json"}', "0+10x40")],
            [('kpistream_events_total{instance="k1",outcome="applied",reason=""}', "0+1000x40"),
             ('kpistream_events_total{instance="k1",outcome="rejected",reason="invalid_json"}', "0+1x40")],
            'instance="k1"', "35m"),
        "KpistreamRestoreFallback": (
            [('kpistream_snapshot_restore_fallbacks_total{instance="k1"}', "0 1 1 1")],
            [('kpistream_snapshot_restore_fallbacks_total{instance="k1"}', "1 1 1 1")],
            'instance="k1"', "3m"),
        "KpistreamWebhookProduceFailing": (
            [('kpistream_webhook_requests_total{instance="k1",crm="hubspot",result="produce_failed"}', "0 0 1 2 2 2")],
            [('kpistream_webhook_requests_total{instance="k1",crm="hubspot",result="produce_failed"}', "3x5")],
            'instance="k1",crm="hubspot"', "4m"),
        "KpistreamWebhookRefused": (
            [('kpistream_webhook_requests_total{instance="k1",crm="pipedrive",result="bad_signature"}', "0 0 20 40 40 40")],
            [('kpistream_webhook_requests_total{instance="k1",crm="pipedrive",result="bad_signature"}', "0 0 2 4 4 4"),
             ('kpistream_webhook_requests_total{instance="k1",crm="pipedrive",result="accepted"}', "0 0 200 400 400 400")],
            'instance="k1",crm="pipedrive"', "4m"),
    }


def render(template, labels, value=None):
    """Fills the alert templates the way Prometheus does for the test values."""
    for k, v in labels.items():
        template = template.replace("{{ $labels.%s }}" % k, v)
    if value is not None:
        for fn in ["humanizePercentage", "humanizeDuration", "humanize"]:
            template = template.replace("{{ $value | %s }}" % fn, value)
        template = template.replace("{{ $value }}", value)
    return template


def firing_value(name):
    """The value each firing case shows in its description."""
    return {
        "SalesMissedMeetingGapRep": "50%", "SalesMissedMeetingGapTeam": "30%",
        "SalesCallsBelowTarget": "20", "SalesMeetingsHeldBelowTarget": "2",
        "SalesMeetingBookingRateFalling": "20%", "SalesWinRateFalling": "10%",
        "SalesLeadResponseSlow": "2h 0m 0s", "SalesChurnSpike": "6",
        "SalesQuotaPacingBehind": "5%", "SalesSellingTimeLow": "40%",
        "KpistreamDown": "0", "KpistreamConsumerLagGrowing": "1.667",
        "KpistreamNoEventsApplied": "0", "KpistreamSnapshotStale": "15m 0s",
        "KpistreamSnapshotFailing": "2", "KpistreamDeadLetterRate": "9.091%",
        "KpistreamRestoreFallback": "1",
        "KpistreamWebhookProduceFailing": "2", "KpistreamWebhookRefused": "40",
    }[name]


# Alerts whose test needs days of evaluation: their own file, evaluated
# every 10 minutes.
SLOW = {"SalesQuotaPacingBehind"}


def alert_tests(slow=False):
    cases = alert_cases()
    alerts = {a[0]: a for a in ALERTS}
    assert set(cases) == set(alerts), set(alerts) ^ set(cases)
    lines = []
    for name, (firing, quiet, labels, at, *interval) in cases.items():
        if (name in SLOW) != slow:
            continue
        for inputs, fires in [(firing, True), (quiet, False)]:
            lines += [f"  - interval: {interval[0] if interval else '1m'}", "    input_series:"]
            for s_, v in inputs:
                lines += [f"      - series: {json.dumps(s_)}", f"        values: {json.dumps(v)}"]
            lines += ["    alert_rule_test:", f"      - eval_time: {at}", f"        alertname: {name}"]
            if fires:
                _, _, _, sev, _, _, _ = alerts[name]
                lines += ["        exp_alerts:", "          - exp_labels:",
                          f"              severity: {sev}"]
                values = {}
                for kv in labels.split('",'):
                    k, v = kv.split("=", 1)
                    values[k] = v.strip(chr(34))
                    lines.append(f"              {k}: {json.dumps(values[k])}")
                _, _, _, _, summary, desc, _ = alerts[name]
                lines += ["            exp_annotations:",
                          f"              summary: {json.dumps(render(summary, values))}",
                          f"              description: {json.dumps(render(desc, values, firing_value(name)))}",
                          f"              runbook_url: {json.dumps(DOCS + '#' + name.lower())}"]
            else:
                lines.append("        exp_alerts: []")
    return lines


def rule_test_file():
    rec_lines, tested = recording_tests()
    all_records = {rec for _, rules in recording_rules() for rec, _ in rules}
    head = ["# Generated by deploy/generate.py: do not edit.",
            "rule_files:", "  - ../rules/kpistream.yml"]
    lines = head + ["evaluation_interval: 1m", "tests:",
                    "  - interval: 1m", "    input_series:"] + rec_lines + alert_tests()
    slow = head + ["evaluation_interval: 10m", "tests:"] + alert_tests(slow=True)
    return "\n".join(lines) + "\n", all_records, tested, "\n".join(slow) + "\n"


RUNBOOKS = {
    "SalesMissedMeetingGapRep": "Open the Sales KPIs dashboard on the rep. Check whether the missed meetings are no-shows (prospects) or meetings never marked held (a CRM hygiene problem: the rep forgets to log). Coach the rep on confirmations and reminders; fix the logging if meetings were held.",
    "SalesMissedMeetingGapTeam": "Compare the team's reps on the dashboard: one rep or all of them? A team-wide jump after a calendar or CRM change usually means meetings stopped being marked held.",
    "SalesCallsBelowTarget": "Check the rep's other activity (emails, meetings held) and time logged: vacation, another assignment, or a dialer that stopped logging calls to the CRM.",
    "SalesMeetingsHeldBelowTarget": "Look at meetings booked and missed for the rep: few bookings point at prospecting, many misses at qualification or reminders.",
    "SalesMeetingBookingRateFalling": "Compare prospects contacted and meetings booked over 7 and 30 days: a campaign with a new audience lowers the rate; so does a change in how calls are logged.",
    "SalesWinRateFalling": "Look at stage conversion and losses by stage on the dashboard: which stage loses more deals than usual? Check lost reasons in the CRM.",
    "SalesLeadResponseSlow": "Look at the lead response p50/p90 panel: a long tail means unassigned leads. Check lead routing and the team's capacity.",
    "SalesChurnSpike": "List the churned accounts of the week in the CRM and look for a common cause (a product incident, a price change, one segment).",
    "SalesQuotaPacingBehind": "Compare won amount month to date with open pipeline and velocity: is there enough late-stage pipeline to close the gap?",
    "SalesSellingTimeLow": "Look at the rep's logged time categories in the CRM: admin and internal meetings crowd out selling.",
    "KpistreamDown": "Check the pod or process: `kubectl describe pod`, its logs, OOM kills (raise the memory limit: state grows with live leads and deals). The group moves its partitions to the other instances after the session timeout; KPIs are restored from snapshots.",
    "KpistreamConsumerLagGrowing": "Compare the input rate with `rate(kpistream_events_total[5m])`. If kpistream is CPU-bound, add instances (up to one per partition); if the broker is slow, check it. A partition stuck behind one message does not happen (bad messages go to the dead-letter topic): look for Kafka errors in `kpistream_kafka_errors_total` and the logs.",
    "KpistreamNoEventsApplied": "Messages are waiting but none is applied: look at `kpistream_events_total` by outcome (all rejected? a producer sends a new format), at Kafka errors in the logs, and at the consumer group's state (`kafka-consumer-groups.sh --describe`).",
    "KpistreamSnapshotStale": "Check `kpistream_snapshot_failures_total` and the logs for `snapshot failed` (disk full, permissions) or `snapshot postponed` (the dead-letter topic does not accept writes). Offsets are committed only as far as snapshots cover, so a restart would reprocess from the last snapshot: nothing is lost, but lag dashboards stop moving.",
    "KpistreamSnapshotFailing": "The logs name the error. Free or grow the snapshot volume, fix its permissions, or make the dead-letter topic writable; the partition keeps its older snapshot meanwhile.",
    "KpistreamDeadLetterRate": "Read the dead-letter topic: headers `kpistream.reason` and `kpistream.detail` say why each message was rejected. A new rejected reason after a deploy of a producer usually means a schema change: fix the producer, then replay the dead letters into the input topic.",
    "KpistreamWebhookProduceFailing": "The receiver could not store CRM payloads (the broker did not acknowledge them within 10 s) and answered 503; the CRM retries, nothing is lost yet. Check the broker and `kpistream_kafka_errors_total`; CRMs give up after their own retry window (HubSpot: about three days).",
    "KpistreamWebhookRefused": "Look at the `result` label: `bad_signature` or `missing_credentials` after a secret rotation means kpistream has the old secret (or HubSpot calls another URL than `webhooks.hubspot_url`); `expired` means a clock skew above `webhooks.max_age`; a flood from unknown addresses means someone plays requests against the endpoint: block them in front. (A correctly signed request sent again is accepted, counted as `redelivered`, and its events are duplicates.)",
    "KpistreamRestoreFallback": "A snapshot could not be read at a restart or rebalance (the log line names the file and why) and an older one was used: nothing was lost, the partition was reprocessed from the older offset. Look for disk or filesystem errors on the snapshot volume.",
}


def alerts_doc():
    lines = ["# Alerts and runbooks", "",
             "Generated by `deploy/generate.py` from the rules it writes to",
             "`deploy/prometheus/rules/kpistream.yml` (also shipped as the Kubernetes",
             "`deploy/k8s/prometheusrule.yaml`). Every alert is unit-tested by",
             "`promtool test rules` (firing and not firing), and every recording rule",
             "against values computed from docs/kpis.md.", "",
             "## Recording rules", "",
             "Names follow `level:metric:operation`. Levels: `rep_team` (labels `rep`,",
             "`team`), `team`, `org`; `_window` levels keep the `window` label.",
             "",
             "- `<level>_window:sales_<part>:sum`: every additive part summed over reps",
             "  and instances (so several instances each owning some partitions add up);",
             "- `<level>:sales_<gauge>:sum`: current-state gauges (`open_deals`,",
             "  `open_pipeline_amount` by stage and `_total`, `customers_active`, `mrr`,",
             "  `meetings_upcoming`, `quota` by period);",
             "- `<level>_window:<ratio>`: every derived KPI of docs/kpis.md, from summed",
             "  parts (no sample where the denominator is zero, as the API's null):",
             "  meeting_booking_rate, meeting_show_rate, missed_meeting_ratio,",
             "  lead_conversion_rate, connect_rate, win_rate, avg_deal_size,",
             "  avg_sales_cycle_days, avg_lead_response_seconds, activities,",
             "  selling_time_ratio, nps, csat, csat_satisfied_ratio, churn_rate,",
             "  retention_rate, upsell_rate, stage_conversion (by stage),",
             "  pipeline_velocity_per_day, quota_attainment_month/quarter, and at team and",
             "  org level cac and clv_cac_ratio; `<level>:arr` and `<level>:clv`;",
             "- `<level>_window:sales_lead_response_seconds:p50|p90` and",
             "  `sales_sales_cycle_seconds:p50|p90`: quantiles of the summed buckets.",
             "", "## Alerts", "",
             "| alert | severity | fires when |", "|---|---|---|"]
    for name, expr, dur, sev, summary, desc, params in ALERTS:
        lines.append(f"| [{name}](#{name.lower()}) | {sev} | {params} |")
    lines.append("")
    for name, expr, dur, sev, summary, desc, params in ALERTS:
        lines += [f"### {name}", "", f"**{sev}**, {params}.", "", "```promql", expr, "```", "",
                  f"Description: {desc}", "", f"Runbook: {RUNBOOKS[name]}", ""]
    lines += ["The thresholds and durations are parameters: change them in the `ALERTS`",
              "table of `deploy/generate.py` and run it, which rewrites the rules, their",
              "tests and this page.", ""]
    return "\n".join(lines)


def prometheus_rule():
    groups = yaml_rules(recording_rules(), alert_rules(), indent="  ")
    return ("# Generated by deploy/generate.py: do not edit.\n"
            "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n"
            "  name: kpistream\n  labels:\n    app.kubernetes.io/name: kpistream\n"
            "    release: prometheus\nspec:\n" + groups)


def files():
    rules = "# Generated by deploy/generate.py: do not edit.\n" + yaml_rules(recording_rules(), alert_rules())
    tests, _, _, slow = rule_test_file()
    out = {
        "prometheus/rules/kpistream.yml": rules,
        "prometheus/tests/kpistream_test.yml": tests,
        "prometheus/tests/kpistream_slow_test.yml": slow,
        "k8s/prometheusrule.yaml": prometheus_rule(),
        "../docs/alerts.md": alerts_doc(),
    }
    import dashboards  # noqa: E402  (deploy/dashboards.py)
    for name, doc in dashboards.all_dashboards().items():
        out[f"grafana/dashboards/{name}"] = json.dumps(doc, indent=2) + "\n"
    return out


def main():
    check = "--check" in sys.argv
    stale = []
    for rel, text in files().items():
        path = os.path.join(HERE, rel)
        old = open(path).read() if os.path.exists(path) else None
        if old != text:
            stale.append(rel)
            if not check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    if check and stale:
        sys.exit("not up to date (run python3 deploy/generate.py): " + ", ".join(stale))
    print(("up to date" if check else "written") + f": {len(files())} files")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
