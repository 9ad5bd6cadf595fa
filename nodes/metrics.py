"""Measurements: PSNR, SSIM, MS-SSIM, latent distance and cosine, code flips, perturbation norms, a report.

Each measuring node outputs its result twice: as a number (FLOAT, the batch mean) and as GENART_METRICS,
a set of labelled measurements with per-image values. Sets merge; GenArt Metrics Report writes all of a
run's measurements to JSON and CSV in the output folder and shows them as a table.

Image metrics follow torchmetrics (SSIM, MS-SSIM: Gaussian window, reflect padding) and skimage (PSNR)
to 1e-6, computed in float64 (tests/test_metrics.py).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import atomic_write, next_counter, output_prefix, ui_file
from ..graph.types import FloatSocket, Image, Latent, Socket, StringSocket, check_image, image_to_nchw
from .handles import CodeMap, Codes
from .io import check_prefix
from .noise import latent_samples

# Wang et al. 2003 scale weights (finest first), as torchmetrics and the reference implementation.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_K1, SSIM_K2 = 0.01, 0.03
LABEL_DESCRIPTION = ("what this measurement compares, shown as its row in the report (e.g. 'eps 8/255 + "
                     "jpeg 75'); measurements with the same label share a row")


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


Metrics = Annotated[MetricSet, Socket("GENART_METRICS")]


def measured(metric: str, items: torch.Tensor, label: str) -> Measurement:
    values = tuple(float(v) for v in items.detach().double().cpu())
    return Measurement(metric, float(sum(values) / len(values)), values, label)


def _pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two tensors of one shape as float64 on a's device; a batch of 1 is repeated to match the other."""
    if a.shape[1:] != b.shape[1:] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
        raise ValueError(f"inputs {names[0]!r} {tuple(a.shape)} and {names[1]!r} {tuple(b.shape)} differ in shape; "
                         "compare tensors of one shape (a batch of 1 is compared with every item of the other)")
    a, b = a.double(), b.to(a.device).double()
    if a.shape[0] != b.shape[0]:
        a, b = torch.broadcast_tensors(a, b)
    return a, b


def _image_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    for t, name in zip((a, b), names, strict=True):
        check_image(t, name)
    a, b = _pair(a, b, names)
    return image_to_nchw(a, names[0]), image_to_nchw(b, names[1])


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


# The metrics as functions, per item, float64.

def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per item in dB (inf for identical items), skimage's formula."""
    mse = _flat((a - b) ** 2).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torchmetrics' SSIM window: int(3.5 * sigma + 0.5) * 2 + 1 taps, normalized, 1-D."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    x = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=dtype, device=device)
    g = torch.exp(-((x / sigma) ** 2) / 2)
    return g / g.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


SSIMBorder = Literal["reflect", "valid"]


def ssim_and_cs(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5, data_range: float = 1.0,
                border: SSIMBorder = "reflect") -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure per item of NCHW images, with an int(3.5 sigma + 0.5) * 2 + 1 tap Gaussian.

    border 'reflect' is torchmetrics' way: reflect padding, SSIM averaged over the whole map, contrast-structure
    over the unpadded interior. 'valid' is skimage's (structural_similarity with gaussian_weights, sigma,
    use_sample_covariance=False): only window positions inside the image count. On 32x32 images the two
    differ by about 1e-2, since a third of the pixels lie within 5 of the border.
    """
    window = gaussian_window(sigma, a.dtype, a.device)
    pad = (window.numel() - 1) // 2
    if min(a.shape[-2:]) <= (pad if border == "reflect" else 2 * pad):
        raise ValueError(f"images of {a.shape[-1]}x{a.shape[-2]} are too small for an SSIM window of "
                         f"{window.numel()} pixels (sigma {sigma}, border {border!r}); lower sigma or compare "
                         "larger images")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    if border == "reflect":
        a = F.pad(a, (pad, pad, pad, pad), mode="reflect")
        b = F.pad(b, (pad, pad, pad, pad), mode="reflect")
    mu_a, mu_b, aa, bb, ab = _filter(torch.cat([a, b, a * a, b * b, a * b]), window).split(a.shape[0])
    mu_aa, mu_bb, mu_ab = mu_a.pow(2), mu_b.pow(2), mu_a * mu_b
    var_a = torch.clamp(aa - mu_aa, min=0.0)
    var_b = torch.clamp(bb - mu_bb, min=0.0)
    cov = ab - mu_ab
    upper = 2 * cov + c2
    lower = var_a + var_b + c2
    ssim_map = ((2 * mu_ab + c1) * upper) / ((mu_aa + mu_bb + c1) * lower)
    cs_map = (upper / lower)[..., pad:-pad, pad:-pad] if border == "reflect" else upper / lower
    return _flat(ssim_map).mean(dim=1), _flat(cs_map).mean(dim=1)


def ms_ssim_weights(scales: int) -> tuple[float, ...]:
    """The standard weights for 5 scales; the first `scales` of them renormalized to sum to 1 for fewer."""
    if scales == len(MS_SSIM_WEIGHTS):
        return MS_SSIM_WEIGHTS
    head = MS_SSIM_WEIGHTS[:scales]
    return tuple(w / sum(head) for w in head)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, scales: int = 5, sigma: float = 1.5,
            data_range: float = 1.0) -> torch.Tensor:
    """Multi-scale SSIM per item (torchmetrics' algorithm with normalize='relu'): contrast-structure at the
    finer scales, SSIM at the coarsest, each clipped at 0, raised to the scale weights and multiplied."""
    weights = torch.tensor(ms_ssim_weights(scales), dtype=a.dtype, device=a.device)
    values = []
    for s in range(scales):
        sim, cs = ssim_and_cs(a, b, sigma, data_range)
        values.append(torch.relu(sim) if s == scales - 1 else torch.relu(cs))
        if s < scales - 1:
            a, b = F.avg_pool2d(a, (2, 2)), F.avg_pool2d(b, (2, 2))
    return torch.stack(values).pow(weights.view(-1, 1)).prod(dim=0)


def check_ms_ssim_size(height: int, width: int, scales: int, sigma: float) -> None:
    size = int(3.5 * sigma + 0.5) * 2 + 1
    coarsest = min(height, width) // 2 ** (scales - 1)
    if coarsest < size:
        need = size * 2 ** (scales - 1)
        raise ValueError(f"input 'scales' = {scales}: {width}x{height} images shrink to {coarsest} pixels at the "
                         f"coarsest scale, smaller than the {size}-pixel window; compare images of at least "
                         f"{need}x{need} or lower scales (or sigma)")


def latent_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per item."""
    return _flat(a - b).norm(dim=1)


def latent_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the flattened items (0 where one of them is all zeros)."""
    return F.cosine_similarity(_flat(a), _flat(b), dim=1, eps=1e-12)


def perturbation_norms(image: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L-inf, L2) norms of image - reference per item, image units."""
    delta = _flat(image - reference)
    return delta.abs().amax(dim=1), delta.norm(dim=1)


# Nodes.

class MeasurePSNR(Node):
    """Peak signal-to-noise ratio between two image batches, in dB."""

    CLASS_TYPE = "GenArtMeasurePSNR"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurement 'psnr' (per image, dB) with its label")
        psnr: FloatSocket = Field(description="mean PSNR over the batch in dB (inf if the images are identical)")

    image_a: Image = Field(description="reference images, [B, H, W, C] float32 in [0, 1]")
    image_b: Image = Field(description="images to compare, same shape (or a batch of 1 against every item)")
    label: str = Field("", description=LABEL_DESCRIPTION)

    def run(self, ctx: RunContext) -> Outputs:
        a, b = _image_pair(self.image_a, self.image_b, ("image_a", "image_b"))
        m = measured("psnr", psnr(a, b), self.label)
        return self.Outputs(metrics=MetricSet((m,)), psnr=m.value)


class MeasureSSIM(Node):
    """Structural similarity (SSIM) between two image batches, Gaussian window.

    By default torchmetrics' convention (reflect padding, the whole map); border 'valid' gives skimage's
    (only windows inside the image), about 1e-2 apart on 32x32 images.
    """

    CLASS_TYPE = "GenArtMeasureSSIM"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurement 'ssim' (per image) with its label")
        ssim: FloatSocket = Field(description="mean SSIM over the batch, in [-1, 1] (1 = identical)")

    image_a: Image = Field(description="reference images, [B, H, W, C] float32 in [0, 1]")
    image_b: Image = Field(description="images to compare, same shape (or a batch of 1 against every item)")
    sigma: float = Field(1.5, ge=0.5, le=5.0, description="standard deviation of the Gaussian window in pixels "
                         "(11 taps at 1.5, Wang et al.)")
    label: str = Field("", description=LABEL_DESCRIPTION)
    border: SSIMBorder = Field("reflect", description="'reflect': torchmetrics' convention, reflect-padded, "
                               "every pixel counts; 'valid': skimage's structural_similarity, only window "
                               "positions inside the image (needs images larger than twice the window's radius)")

    def run(self, ctx: RunContext) -> Outputs:
        a, b = _image_pair(self.image_a, self.image_b, ("image_a", "image_b"))
        m = measured("ssim", ssim_and_cs(a, b, self.sigma, border=self.border)[0], self.label)
        return self.Outputs(metrics=MetricSet((m,)), ssim=m.value)


class MeasureMSSSIM(Node):
    """Multi-scale structural similarity (MS-SSIM) between two image batches."""

    CLASS_TYPE = "GenArtMeasureMSSSIM"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurement 'ms_ssim' (per image) with its label")
        ms_ssim: FloatSocket = Field(description="mean MS-SSIM over the batch, in [0, 1] (1 = identical)")

    image_a: Image = Field(description="reference images, [B, H, W, C] float32 in [0, 1]")
    image_b: Image = Field(description="images to compare, same shape (or a batch of 1 against every item)")
    scales: int = Field(5, ge=1, le=5, description="scales (each halves the image); 5 needs images of at least "
                        "176 px at sigma 1.5. Fewer scales use the first weights, renormalized")
    sigma: float = Field(1.5, ge=0.5, le=5.0, description="standard deviation of the Gaussian window in pixels")
    label: str = Field("", description=LABEL_DESCRIPTION)

    def run(self, ctx: RunContext) -> Outputs:
        a, b = _image_pair(self.image_a, self.image_b, ("image_a", "image_b"))
        check_ms_ssim_size(a.shape[-2], a.shape[-1], self.scales, self.sigma)
        m = measured("ms_ssim", ms_ssim(a, b, self.scales, self.sigma), self.label)
        return self.Outputs(metrics=MetricSet((m,)), ms_ssim=m.value)


class MeasureLatentDistance(Node):
    """Euclidean distance and cosine similarity between two latent batches."""

    CLASS_TYPE = "GenArtMeasureLatentDistance"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurements 'latent_l2' and 'latent_cosine' (per item)")
        distance: FloatSocket = Field(description="mean over the batch of ||a - b||_2 (flattened latents)")
        cosine: FloatSocket = Field(description="mean over the batch of the cosine similarity, in [-1, 1]")

    latent_a: Latent = Field(description="LATENT, samples [B, C, h, w]")
    latent_b: Latent = Field(description="LATENT, samples of the same shape (or a batch of 1)")
    label: str = Field("", description=LABEL_DESCRIPTION)

    def run(self, ctx: RunContext) -> Outputs:
        a, b = _pair(latent_samples(self.latent_a, "latent_a"), latent_samples(self.latent_b, "latent_b"),
                     ("latent_a", "latent_b"))
        d = measured("latent_l2", latent_l2(a, b), self.label)
        c = measured("latent_cosine", latent_cosine(a, b), self.label)
        return self.Outputs(metrics=MetricSet((d, c)), distance=d.value, cosine=c.value)


class MeasureCodeFlips(Node):
    """Fraction of codebook indices that differ between two code maps."""

    CLASS_TYPE = "GenArtMeasureCodeFlips"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurement 'code_flip_rate' (per item)")
        flip_rate: FloatSocket = Field(description="mean over the batch of the fraction of positions whose "
                                       "index differs, in [0, 1]")

    codes_a: Codes = Field(description="codebook indices, int64 [B, h, w]")
    codes_b: Codes = Field(description="codebook indices of the same shape (or a batch of 1)")
    label: str = Field("", description=LABEL_DESCRIPTION)

    def run(self, ctx: RunContext) -> Outputs:
        a_map: CodeMap = self.codes_a
        b_map: CodeMap = self.codes_b
        if a_map.num_codes != b_map.num_codes:
            raise ValueError(f"inputs 'codes_a' ({a_map.num_codes} codes) and 'codes_b' ({b_map.num_codes} codes) "
                             "come from different codebooks; compare codes of one VQ model")
        a, b = _pair(a_map.indices, b_map.indices, ("codes_a", "codes_b"))
        m = measured("code_flip_rate", _flat((a != b).double()).mean(dim=1), self.label)
        return self.Outputs(metrics=MetricSet((m,)), flip_rate=m.value)


class MeasurePerturbation(Node):
    """L-inf and L2 norms of the difference between perturbed and clean images."""

    CLASS_TYPE = "GenArtMeasurePerturbation"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurements 'perturbation_linf' and 'perturbation_l2'")
        linf: FloatSocket = Field(description="mean over the batch of max |image - reference|, image units "
                                  "(x 255 for 8-bit levels)")
        l2: FloatSocket = Field(description="mean over the batch of ||image - reference||_2, image units")

    image: Image = Field(description="perturbed images, [B, H, W, C] float32 in [0, 1]")
    reference: Image = Field(description="clean images, same shape (or a batch of 1)")
    label: str = Field("", description=LABEL_DESCRIPTION)

    def run(self, ctx: RunContext) -> Outputs:
        a, b = _image_pair(self.image, self.reference, ("image", "reference"))
        linf, l2 = perturbation_norms(a, b)
        mi, m2 = measured("perturbation_linf", linf, self.label), measured("perturbation_l2", l2, self.label)
        return self.Outputs(metrics=MetricSet((mi, m2)), linf=mi.value, l2=m2.value)


METRICS_IN = "measurements to include (GENART_METRICS from a Measure node, a merge or another report)"


class MergeMetrics(Node):
    """Join measurements from several nodes into one set (for reports with many inputs)."""

    CLASS_TYPE = "GenArtMergeMetrics"
    CATEGORY = "GenArt/metrics"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="all measurements of the inputs, in input order")

    metrics_1: Metrics = Field(description=METRICS_IN)
    metrics_2: Metrics | None = Field(None, description=METRICS_IN)
    metrics_3: Metrics | None = Field(None, description=METRICS_IN)
    metrics_4: Metrics | None = Field(None, description=METRICS_IN)

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(metrics=self.metrics_1.merge(self.metrics_2, self.metrics_3, self.metrics_4))


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


class MetricsReport(Node):
    """Write all measurements of a run to JSON and CSV in the output folder, and show them as a table."""

    CLASS_TYPE = "GenArtMetricsReport"
    CATEGORY = "GenArt/metrics"
    OUTPUT_NODE = True

    class Outputs(NodeOutputs):
        table: StringSocket = Field(description="the measurements as a plain-text table (rows: labels, columns: "
                                    "metrics)")

    metrics_1: Metrics = Field(description=METRICS_IN)
    metrics_2: Metrics | None = Field(None, description=METRICS_IN)
    metrics_3: Metrics | None = Field(None, description=METRICS_IN)
    metrics_4: Metrics | None = Field(None, description=METRICS_IN)
    metrics_5: Metrics | None = Field(None, description=METRICS_IN)
    metrics_6: Metrics | None = Field(None, description=METRICS_IN)
    metrics_7: Metrics | None = Field(None, description=METRICS_IN)
    metrics_8: Metrics | None = Field(None, description=METRICS_IN)
    filename_prefix: str = Field("GenArt_metrics", description="file name prefix inside the output folder (may "
                                 "contain subfolders); writes <prefix>_<counter>_.json and .csv")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        metric_set = self.metrics_1.merge(self.metrics_2, self.metrics_3, self.metrics_4, self.metrics_5,
                                          self.metrics_6, self.metrics_7, self.metrics_8)
        folder, stem = output_prefix(ctx.paths.output_dir, self.filename_prefix)
        counter = next_counter(folder, stem)
        name = f"{stem}_{counter:05}_"
        files = []
        for ext, text in ((".json", report_json(metric_set)), (".csv", report_csv(metric_set))):
            atomic_write(folder / (name + ext), text.encode("utf-8"))
            files.append(ui_file(ctx.paths.output_dir, folder / (name + ext)))
        table = format_table(metric_set)
        ctx.ui["text"] = [table]
        ctx.ui["files"] = files
        ctx.ui["metrics"] = [{"label": m.label, "metric": m.metric, "value": _json_number(m.value)}
                             for m in metric_set.measurements]
        return self.Outputs(table=table)
