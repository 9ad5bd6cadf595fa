"""Measurements: PSNR, SSIM, MS-SSIM, latent distance and cosine, code flips, perturbation norms, a report.

Each measuring node outputs its result twice: as a number (FLOAT, the batch mean) and as GENART_METRICS,
a set of labelled measurements with per-image values. Sets merge; GenArt Metrics Report writes all of a
run's measurements to JSON and CSV in the output folder and shows them as a table.

Image metrics follow torchmetrics (SSIM, MS-SSIM: Gaussian window, reflect padding) and skimage (PSNR)
to 1e-6, computed in float64 (tests/test_metrics.py).
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from ..core.handles import CodeMap
from ..core.latents import latent_samples
from ..core.measurements import MetricSet, _json_number, format_table, measured, report_csv, report_json
from ..core.metrics import (
    SSIMBorder,
    _flat,
    check_ms_ssim_size,
    latent_cosine,
    latent_l2,
    ms_ssim,
    perturbation_norms,
    psnr,
    ssim_and_cs,
)
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import atomic_write, next_counter, output_prefix, ui_file
from ..graph.types import FloatSocket, Image, Latent, StringSocket, check_image, image_to_nchw
from .io import check_prefix
from .sockets import Codes, Metrics

LABEL_DESCRIPTION = ("what this measurement compares, shown as its row in the report (e.g. 'eps 8/255 + "
                     "jpeg 75'); measurements with the same label share a row")


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


# The metrics as functions, per item, float64.


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
