"""deploy/prometheus/alerts.yaml asks only for what GET /metrics really exposes.

No Prometheus runs here, so each rule is read as a document and checked against a real scrape:
the series it names, the label values it matches, the labels its annotations print.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitoring.prometheus import QUEUE_STATES
from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY, count_outcomes
from tests.testenv import ROOT

GROUPS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())["groups"]
RULES = [rule for group in GROUPS for rule in group["rules"]]
OUTCOMES = {"succeeded", "retried", "failed"}  # what supworker/runner.py counts per job type
ALLOWED_VALUES = {"state": set(QUEUE_STATES), "outcome": OUTCOMES}


@pytest.fixture
def exposed(client, redis_conn) -> dict[str, set[str]]:
    """Each series of a scrape with the label names it carries, after one job outcome and one consumer."""
    count_outcomes(redis_conn, "notification.push", succeeded=1)
    redis_conn.sadd(CONSUMERS_KEY, "c1")
    redis_conn.hset(CONSUMER_KEY + "c1", mapping={"receivedMessages": 1})
    response = client.get("/metrics", HTTP_HOST="127.0.0.1")
    assert response.status_code == 200
    series: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            series[sample.name] |= set(sample.labels)
    return series


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_each_rule_names_exposed_series_label_values_and_labels(rule, exposed):
    expr = rule["expr"]
    names = set(re.findall(r"\bsupworker_[a-z_]+", expr))
    assert names and names <= set(exposed), f"not exposed: {names - set(exposed)}"
    for label, values in re.findall(r'(\w+)=~?"([^"]*)"', expr):
        assert set(values.split("|")) <= ALLOWED_VALUES[label], f"{label}={values}"
    grouped = {label.strip() for labels in re.findall(r"by \(([\w, ]+)\)", expr) for label in labels.split(",")}
    kept = grouped or set.union(*(exposed[name] for name in names))
    printed = set(re.findall(r"\$labels\.(\w+)", str(rule["annotations"])))
    assert printed <= kept, f"the annotations print labels the expression drops: {printed - kept}"
    assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_readme_lists_every_alert():
    readme = (ROOT / "README.md").read_text()
    assert [rule["alert"] for rule in RULES if f"`{rule['alert']}`" not in readme] == []
