"""Scrapes a running `reins serve` the way Prometheus does and reads the
answer with the official Python client's OpenMetrics parser
(`prometheus_client.openmetrics.parser`), which refuses a document that
breaks the format.

Usage: python3 openmetrics_scrape.py BASE_URL TRACE_ID PIPELINE PROVIDER MIN_SECONDS

TRACE_ID is the trace of a run the test made on PIPELINE (served by
PROVIDER), which took at least MIN_SECONDS; its latency buckets must carry
it as an exemplar. Prints one line per check and a closing "N passed, N failed".
"""

import math
import sys
import time
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from checks import check, run

BASE, TRACE, PIPELINE, PROVIDER = sys.argv[1:5]
MIN_SECONDS = float(sys.argv[5])

# What Prometheus 3 sends (scrape_protocols without protobuf).
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)

_families = None


def families():
    """The scrape, parsed once; every family, by name."""
    global _families
    if _families is None:
        req = urllib.request.Request(f"{BASE}/metrics", headers={"Accept": ACCEPT})
        with urllib.request.urlopen(req, timeout=30) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = resp.read().decode("utf-8")
        assert ctype.startswith("application/openmetrics-text; version=1.0.0"), ctype
        assert body.endswith("# EOF\n"), body[-200:]
        # The parser is lazy: list() makes it read (and check) the whole document.
        _families = {f.name: f for f in text_string_to_metric_families(body)}
    return _families


def traced_buckets(name, labels):
    """The buckets of histogram `name` with these labels, in order, and the
    ones whose exemplar is the test's trace."""
    fam = families().get(name)
    assert fam is not None, f"no family {name} in {sorted(families())}"
    assert fam.type == "histogram", (name, fam.type)
    buckets = [
        s
        for s in fam.samples
        if s.name == name + "_bucket"
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert buckets, f"no {name} buckets with {labels}: {fam.samples}"
    les = [float(s.labels["le"]) for s in buckets]
    assert les == sorted(les) and les[-1] == math.inf, les
    traced = [
        (i, s)
        for i, s in enumerate(buckets)
        if s.exemplar is not None and s.exemplar.labels.get("trace_id") == TRACE
    ]
    return buckets, traced


def assert_exemplar_in_its_bucket(name, labels):
    buckets, traced = traced_buckets(name, labels)
    assert len(traced) == 1, f"want one bucket of {name} with trace {TRACE}: {buckets}"
    i, s = traced[0]
    e = s.exemplar
    le = float(s.labels["le"])
    below = float(buckets[i - 1].labels["le"]) if i > 0 else -math.inf
    # The smallest bucket that holds the value: above the previous bound.
    assert below < e.value <= le, (below, e.value, le)
    assert e.value >= MIN_SECONDS, (e.value, MIN_SECONDS)
    assert s.value >= 1, s
    assert e.timestamp is not None and abs(time.time() - float(e.timestamp)) < 600, e


@check
def the_whole_document_parses_as_openmetrics():
    assert families()


@check
def run_duration_buckets_carry_the_trace():
    assert_exemplar_in_its_bucket(
        "reins_run_duration_seconds", {"pipeline": PIPELINE, "status": "completed"}
    )


@check
def model_latency_buckets_carry_the_trace():
    assert_exemplar_in_its_bucket("reins_model_latency_seconds", {"provider": PROVIDER})


@check
def counters_are_families_without_total():
    fam = families().get("reins_requests")
    assert fam is not None and fam.type == "counter", fam
    samples = [
        s
        for s in fam.samples
        if s.name == "reins_requests_total"
        and s.labels == {"pipeline": PIPELINE, "status": "completed"}
    ]
    assert len(samples) == 1 and samples[0].value >= 2, fam.samples


if __name__ == "__main__":
    run()
