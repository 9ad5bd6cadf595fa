"""Measurements: per-item values with a label, joined into sets and written as tables, JSON and CSV."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Measurement:
    """One metric over a batch: `value` is the mean of `items` (one per image or latent)."""

    metric: str
    value: float
    items: tuple[float, ...]
    label: str = ""


@dataclass(frozen=True)
class MetricSet:
    """Labelled measurements, in the order they were made. Socket GENART_METRICS."""

    measurements: tuple[Measurement, ...] = ()

    def merge(self, *others: MetricSet | None) -> MetricSet:
        """This set followed by `others`, each measurement once (a set reached twice through a graph counts once)."""
        seen: set[int] = set()
        merged = []
        for m in (m for s in (self, *others) if s is not None for m in s.measurements):
            if id(m) not in seen:
                seen.add(id(m))
                merged.append(m)
        return MetricSet(tuple(merged))

    def table(self) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
        """(row labels, metric names, {(label, metric): value}) in order of first appearance. A label
        measured twice with the same metric gets a ' #2', ' #3', ... row."""
        labels: list[str] = []
        metrics: list[str] = []
        cells: dict[tuple[str, str], float] = {}
        for m in self.measurements:
            label, n = m.label, 1
            while (label, m.metric) in cells:
                n += 1
                label = f"{m.label} #{n}"
            cells[(label, m.metric)] = m.value
            if label not in labels:
                labels.append(label)
            if m.metric not in metrics:
                metrics.append(m.metric)
        return labels, metrics, cells


def measured(metric: str, items: torch.Tensor, label: str) -> Measurement:
    values = tuple(float(v) for v in items.detach().double().cpu())
    return Measurement(metric, float(sum(values) / len(values)), values, label)


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def format_table(metric_set: MetricSet) -> str:
    """A plain-text table: one row per label, one column per metric."""
    labels, metrics, cells = metric_set.table()
    header = ["label", *metrics]
    rows = [[label or "-", *(f"{cells[(label, m)]:.6g}" if (label, m) in cells else "" for m in metrics)]
            for label in labels]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def report_json(metric_set: MetricSet) -> str:
    labels, metrics, cells = metric_set.table()
    data = {
        "measurements": [
            {"label": m.label, "metric": m.metric, "value": _json_number(m.value),
             "items": [_json_number(v) for v in m.items]}
            for m in metric_set.measurements],
        "table": {label: {m: _json_number(cells[(label, m)]) for m in metrics if (label, m) in cells}
                  for label in labels},
    }
    return json.dumps(data, indent=2, allow_nan=False)


def report_csv(metric_set: MetricSet) -> str:
    """One row per measurement: label, metric, value (batch mean), min, max, n, items (';'-separated)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "metric", "value", "min", "max", "n", "items"])
    for m in metric_set.measurements:
        writer.writerow([m.label, m.metric, repr(m.value), repr(min(m.items)), repr(max(m.items)), len(m.items),
                         ";".join(repr(v) for v in m.items)])
    return buffer.getvalue()
