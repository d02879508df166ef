"""The Grafana dashboards of deploy/grafana/dashboards, written by generate.py.

Each dashboard is a list of rows (the KPI pyramid for sales), each row a list
of panels: (type, title, unit, thresholds or None, [(expr, legend)]). Panels
are laid out three per line, 8 units wide and high; ids are sequential.
"""

DS = {"type": "prometheus", "uid": "kpistream-prometheus"}

SALES = [
    ('Activity', [
        ('timeseries', 'Calls by team', 'short', None, [
            ('team_window:sales_calls:sum{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('bargauge', 'Calls by rep (7d target 50)', 'short', [('red', None), ('green', 50)], [
            ('rep_team_window:sales_calls:sum{team=~"$team",rep=~"$rep",window="7d"}', '{{rep}}'),
        ]),
        ('bargauge', 'Meetings held by rep (7d target 5)', 'short', [('red', None), ('green', 5)], [
            ('rep_team_window:sales_meetings_held:sum{team=~"$team",rep=~"$rep",window="7d"}', '{{rep}}'),
        ]),
        ('timeseries', 'Activities (calls + emails + meetings held)', 'short', None, [
            ('team_window:activities{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('stat', 'Missed meeting ratio (alert above 15% per team)', 'percentunit', [('green', None), ('red', 0.15)], [
            ('team_window:missed_meeting_ratio{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('timeseries', 'Meetings missed, due and upcoming', 'short', None, [
            ('sum(team_window:sales_meetings_missed:sum{team=~"$team",window="$window"})', 'missed'),
            ('sum(team_window:sales_meetings_due:sum{team=~"$team",window="$window"})', 'due'),
            ('sum(team:sales_meetings_upcoming:sum{team=~"$team"})', 'upcoming'),
        ]),
    ]),
    ('Conversion and funnel', [
        ('timeseries', 'Meeting booking rate', 'percentunit', None, [
            ('team_window:meeting_booking_rate{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('stat', 'Meeting show rate', 'percentunit', [('red', None), ('yellow', 0.7), ('green', 0.85)], [
            ('team_window:meeting_show_rate{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('stat', 'Lead conversion rate', 'percentunit', None, [
            ('team_window:lead_conversion_rate{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('stat', 'Connect rate', 'percentunit', None, [
            ('team_window:connect_rate{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('timeseries', 'Win rate', 'percentunit', None, [
            ('team_window:win_rate{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('bargauge', 'Stage conversion (org)', 'percentunit', None, [
            ('org_window:stage_conversion{window="$window"}', '{{stage}}'),
        ]),
        ('table', 'Stage exits by outcome (org)', 'short', None, [
            ('org_window:sales_stage_exits:sum{window="$window"}', '{{stage}} {{outcome}}'),
        ]),
        ('timeseries', 'Lead response time p50 / p90 (alert above 1h average)', 's', [('green', None), ('red', 3600)], [
            ('team_window:sales_lead_response_seconds:p50{team=~"$team",window="$window"}', 'p50 {{team}}'),
            ('team_window:sales_lead_response_seconds:p90{team=~"$team",window="$window"}', 'p90 {{team}}'),
        ]),
    ]),
    ('Revenue and pipeline', [
        ('timeseries', 'Won amount', 'currencyUSD', None, [
            ('team_window:sales_won_amount:sum{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('timeseries', 'Deals won and lost', 'short', None, [
            ('sum(team_window:sales_deals_won:sum{team=~"$team",window="$window"})', 'won'),
            ('sum(team_window:sales_deals_lost:sum{team=~"$team",window="$window"})', 'lost'),
        ]),
        ('stat', 'Average deal size', 'currencyUSD', None, [
            ('team_window:avg_deal_size{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('stat', 'Average sales cycle', 'd', None, [
            ('team_window:avg_sales_cycle_days{team=~"$team",window="$window"}', '{{team}}'),
        ]),
        ('bargauge', 'Open pipeline by stage', 'currencyUSD', None, [
            ('sum by (stage) (team:sales_open_pipeline_amount:sum{team=~"$team"})', '{{stage}}'),
        ]),
        ('stat', 'Open deals', 'short', None, [
            ('sum(team:sales_open_deals_total:sum{team=~"$team"})', 'open deals'),
        ]),
        ('stat', 'Pipeline velocity per day', 'currencyUSD', None, [
            ('team_window:pipeline_velocity_per_day{team=~"$team",window="$window"}', '{{team}}'),
        ]),
    ]),
    ('Retention', [
        ('stat', 'MRR and ARR', 'currencyUSD', None, [
            ('sum(team:sales_mrr:sum{team=~"$team"})', 'MRR'),
            ('sum(team:arr{team=~"$team"})', 'ARR'),
        ]),
        ('stat', 'Active customers', 'short', None, [
            ('sum(team:sales_customers_active:sum{team=~"$team"})', 'active'),
        ]),
        ('timeseries', 'MRR movements', 'currencyUSD', None, [
            ('sum(team_window:sales_mrr_new:sum{team=~"$team",window="$window"})', 'new'),
            ('sum(team_window:sales_mrr_expansion:sum{team=~"$team",window="$window"})', 'expansion'),
            ('-sum(team_window:sales_mrr_contraction:sum{team=~"$team",window="$window"})', 'contraction'),
            ('-sum(team_window:sales_mrr_churned:sum{team=~"$team",window="$window"})', 'churned'),
        ]),
        ('stat', 'Churn rate (org)', 'percentunit', None, [
            ('org_window:churn_rate{window="$window"}', 'churn'),
        ]),
        ('stat', 'NPS (org)', 'none', [('red', None), ('yellow', 0), ('green', 30)], [
            ('org_window:nps{window="$window"}', 'NPS'),
        ]),
        ('stat', 'CSAT (org)', 'none', [('red', None), ('yellow', 3.5), ('green', 4)], [
            ('org_window:csat{window="$window"}', 'CSAT'),
        ]),
    ]),
    ('Efficiency', [
        ('bargauge', 'Selling time ratio by rep (alert below 60%)', 'percentunit', [('red', None), ('green', 0.6)], [
            ('rep_team_window:selling_time_ratio{team=~"$team",rep=~"$rep",window="7d"}', '{{rep}}'),
        ]),
        ('stat', 'Acquisition spend', 'currencyUSD', None, [
            ('org_window:sales_acquisition_spend:sum{window="$window"}', 'spend'),
        ]),
        ('stat', 'Customer acquisition cost (org)', 'currencyUSD', None, [
            ('org_window:cac{window="$window"}', 'CAC'),
        ]),
    ]),
    ('Quota', [
        ('bargauge', "Quota attainment, month to date (alert behind the month's pace)", 'percentunit', [('red', None), ('yellow', 0.8), ('green', 1)], [
            ('team_window:quota_attainment_month{team=~"$team"}', '{{team}}'),
        ]),
        ('bargauge', 'Quota attainment, quarter to date', 'percentunit', [('red', None), ('yellow', 0.8), ('green', 1)], [
            ('team_window:quota_attainment_quarter{team=~"$team"}', '{{team}}'),
        ]),
        ('stat', "Month's elapsed share", 'percentunit', None, [
            ('(day_of_month() - 1 + hour() / 24) / days_in_month()', 'elapsed'),
        ]),
    ]),
]

OPERATIONS = [
    ('Throughput', [
        ('timeseries', 'Messages by outcome', 'ops', None, [
            ('sum by (outcome) (rate(kpistream_events_total[$__rate_interval]))', '{{outcome}}'),
        ]),
        ('timeseries', 'Rejected by reason', 'ops', None, [
            ('sum by (reason) (rate(kpistream_events_total{outcome="rejected"}[$__rate_interval]))', '{{reason}}'),
        ]),
        ('timeseries', 'Apply latency p99', 's', None, [
            ('histogram_quantile(0.99, sum by (le) (rate(kpistream_apply_duration_seconds_bucket[$__rate_interval])))', 'p99'),
        ]),
    ]),
    ('Kafka', [
        ('timeseries', 'Consumer lag by partition (alert when growing past 1000)', 'short', [('green', None), ('red', 1000)], [
            ('sum by (topic, partition) (kpistream_consumer_lag_messages)', '{{topic}}/{{partition}}'),
        ]),
        ('stat', 'Partitions assigned', 'short', None, [
            ('sum by (instance) (kpistream_partitions_assigned)', '{{instance}}'),
        ]),
        ('stat', 'Dead letters written', 'short', None, [
            ('sum by (result) (kpistream_dead_letter_messages_total)', '{{result}}'),
        ]),
        ('stat', 'Instances up', 'short', [('red', None), ('green', 1)], [
            ('sum(up{job="kpistream"})', 'up'),
        ]),
    ]),
    ('Snapshots', [
        ('timeseries', 'Snapshot age (alert above 10m)', 's', [('green', None), ('red', 600)], [
            ('max by (topic, partition) (kpistream_snapshot_age_seconds)', '{{topic}}/{{partition}}'),
        ]),
        ('timeseries', 'Snapshot size', 'bytes', None, [
            ('sum by (topic, partition) (kpistream_snapshot_size_bytes)', '{{topic}}/{{partition}}'),
        ]),
        ('stat', 'Snapshot failures and restore fallbacks', 'short', [('green', None), ('red', 1)], [
            ('sum(kpistream_snapshot_failures_total)', 'failures'),
            ('sum(kpistream_snapshot_restore_fallbacks_total)', 'fallbacks'),
        ]),
    ]),
    ('Scrapes', [
        ('stat', 'Series and bytes per scrape', 'short', None, [
            ('max(kpistream_scrape_series)', 'series'),
        ]),
        ('stat', 'Scrape size', 'bytes', None, [
            ('max(kpistream_scrape_size_bytes)', 'bytes'),
        ]),
        ('stat', 'Reps folded into other', 'short', [('green', None), ('yellow', 1)], [
            ('max(kpistream_folded_reps)', 'folded'),
        ]),
    ]),
]



def _panels(rows):
    panels, pid, y = [], 0, 0
    for title, row in rows:
        pid += 1
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for i, (typ, name, unit, thresholds, targets) in enumerate(row):
            pid += 1
            defaults = {"unit": unit}
            if thresholds is not None:
                defaults["thresholds"] = {"mode": "absolute", "steps": [
                    {"color": c, "value": v} for c, v in thresholds]}
                defaults["color"] = {"mode": "thresholds"}
            panels.append({
                "id": pid, "type": typ, "title": name, "datasource": DS,
                "gridPos": {"h": 8, "w": 8, "x": 8 * (i % 3), "y": y + 8 * (i // 3)},
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {},
                "targets": [{"refId": chr(ord("A") + j), "datasource": DS, "expr": e, "legendFormat": l}
                            for j, (e, l) in enumerate(targets)],
            })
        y += 8 * ((len(row) + 2) // 3)
    return panels


def _query_var(name, label, query):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query,
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"text": "All", "value": "$__all"}}


def _dashboard(uid, title, variables, rows):
    return {"uid": uid, "title": title, "tags": ["kpistream"], "timezone": "browser",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "1m",
            "time": {"from": "now-7d", "to": "now"}, "templating": {"list": variables},
            "annotations": {"list": []}, "panels": _panels(rows)}


WINDOWS = ["1h", "24h", "7d", "30d", "90d", "mtd", "qtd"]


def all_dashboards():
    variables = [
        _query_var("team", "Team", "label_values(team_window:sales_calls:sum, team)"),
        _query_var("rep", "Rep", 'label_values(rep_team_window:sales_calls:sum{team=~"$team"}, rep)'),
        {"name": "window", "label": "Window", "type": "custom", "query": ",".join(WINDOWS),
         "current": {"text": "7d", "value": "7d"},
         "options": [{"text": w, "value": w, "selected": w == "7d"} for w in WINDOWS]},
    ]
    return {
        "sales-kpis.json": _dashboard("kpistream-sales", "Sales KPIs", variables, SALES),
        "kpistream-operations.json": _dashboard("kpistream-ops", "kpistream operations", [], OPERATIONS),
    }

