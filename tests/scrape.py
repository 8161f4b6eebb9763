"""Read a process's /metrics over HTTP, as Prometheus would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["scrape"]


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """Sample -> value, keyed ``name`` or ``name{label="value"}`` ({} while nothing answers).

    The ``adapter`` label is left out of the keys: a connector process runs one adapter.
    """
    try:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())
                              if k != "adapter")
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
