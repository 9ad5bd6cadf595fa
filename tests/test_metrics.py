"""Measurements: agreement with skimage and torchmetrics, the nodes' outputs, and the report files."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from comfyui_genart.core import measurements, metrics
from comfyui_genart.core.handles import CodeMap
from comfyui_genart.graph.context import RunContext, RunSettings
from comfyui_genart.nodes import metrics as M


def _images(seed: int, shape=(3, 3, 32, 32), noise=0.1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = (a + noise * torch.randn(shape, generator=g)).clamp(0, 1)
    return a, b


def _ctx(paths=None) -> RunContext:
    return RunContext(RunSettings(paths=paths) if paths is not None else RunSettings())


def test_psnr_matches_skimage():
    sk = pytest.importorskip("skimage.metrics")
    a, b = _images(0)
    ours = metrics.psnr(a.double(), b.double())
    ref = torch.tensor([sk.peak_signal_noise_ratio(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0)
                        for i in range(len(a))], dtype=torch.float64)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_psnr_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    a, b = _images(1)
    ref = tm.peak_signal_noise_ratio(b.double(), a.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(metrics.psnr(a.double(), b.double()), ref, atol=1e-6, rtol=0)


def test_ssim_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    for sigma in (1.5, 0.8):
        a, b = _images(2)
        ref = tm.structural_similarity_index_measure(b.double(), a.double(), sigma=sigma, data_range=1.0,
                                                     reduction="none")
        torch.testing.assert_close(metrics.ssim_and_cs(a.double(), b.double(), sigma)[0], ref, atol=1e-6, rtol=0)


def test_ms_ssim_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    a, b = _images(3, shape=(2, 3, 192, 192), noise=0.05)
    ref = tm.multiscale_structural_similarity_index_measure(b.double(), a.double(), data_range=1.0,
                                                            reduction="none")
    torch.testing.assert_close(metrics.ms_ssim(a.double(), b.double()), ref, atol=1e-6, rtol=0)
    small_a, small_b = a[..., :64, :64], b[..., :64, :64]
    ref3 = tm.multiscale_structural_similarity_index_measure(small_b.double(), small_a.double(), data_range=1.0,
                                                             reduction="none", betas=metrics.ms_ssim_weights(3))
    torch.testing.assert_close(metrics.ms_ssim(small_a.double(), small_b.double(), scales=3), ref3, atol=1e-6, rtol=0)


def test_ssim_of_identical_images_is_one_and_psnr_infinite():
    a, _ = _images(4)
    out = M.MeasureSSIM(image_a=a.movedim(1, -1), image_b=a.movedim(1, -1)).run(_ctx())
    assert out.ssim == pytest.approx(1.0, abs=1e-12)
    psnr = M.MeasurePSNR(image_a=a.movedim(1, -1), image_b=a.movedim(1, -1)).run(_ctx())
    assert psnr.psnr == float("inf")


def test_measure_psnr_node_outputs_number_and_metrics():
    a, b = _images(5)
    out = M.MeasurePSNR(image_a=a.movedim(1, -1), image_b=b.movedim(1, -1), label="noisy").run(_ctx())
    (m,) = out.metrics.measurements
    assert (m.metric, m.label, len(m.items)) == ("psnr", "noisy", 3)
    assert out.psnr == pytest.approx(sum(m.items) / 3)
    torch.testing.assert_close(torch.tensor(m.items, dtype=torch.float64), metrics.psnr(a.double(), b.double()))


def test_measure_broadcasts_a_batch_of_one_and_refuses_other_shapes():
    a, b = _images(6)
    out = M.MeasurePSNR(image_a=a[:1].movedim(1, -1), image_b=b.movedim(1, -1)).run(_ctx())
    assert len(out.metrics.measurements[0].items) == 3
    with pytest.raises(ValueError, match=r"'image_a'.*'image_b'.*differ in shape"):
        M.MeasurePSNR(image_a=a[..., :16].movedim(1, -1), image_b=b.movedim(1, -1)).run(_ctx())


def test_ms_ssim_node_refuses_images_too_small_for_its_scales():
    a, b = _images(7)
    with pytest.raises(ValueError, match=r"input 'scales' = 5: 32x32 images.*lower scales"):
        M.MeasureMSSSIM(image_a=a.movedim(1, -1), image_b=b.movedim(1, -1)).run(_ctx())
    M.MeasureMSSSIM(image_a=a.movedim(1, -1), image_b=b.movedim(1, -1), scales=1).run(_ctx())


def test_latent_distance_and_cosine():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1)
    b = torch.tensor([[0.0, 4.0], [2.0, 2.0]]).view(2, 2, 1, 1)
    out = M.MeasureLatentDistance(latent_a={"samples": a}, latent_b={"samples": b}).run(_ctx())
    assert out.distance == pytest.approx((5.0 + 2**0.5) / 2)
    assert out.cosine == pytest.approx((0.0 + 1.0) / 2)
    assert [m.metric for m in out.metrics.measurements] == ["latent_l2", "latent_cosine"]


def test_code_flip_rate():
    a = torch.zeros(2, 4, 4, dtype=torch.long)
    b = a.clone()
    b[0, 0, :2] = 5  # 2 of 16 flipped in item 0, none in item 1
    out = M.MeasureCodeFlips(codes_a=CodeMap(a, 8, 4), codes_b=CodeMap(b, 8, 4)).run(_ctx())
    assert out.metrics.measurements[0].items == (2 / 16, 0.0)
    assert out.flip_rate == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match=r"different codebooks"):
        M.MeasureCodeFlips(codes_a=CodeMap(a, 8, 4), codes_b=CodeMap(b, 16, 4)).run(_ctx())


def test_perturbation_norms():
    ref = torch.full((2, 4, 4, 3), 0.5)
    img = ref.clone()
    img[0, 0, 0, 0] += 0.25
    img[1] += 0.01
    out = M.MeasurePerturbation(image=img, reference=ref).run(_ctx())
    linf, l2 = out.metrics.measurements
    assert linf.items == pytest.approx((0.25, 0.01))
    assert l2.items == pytest.approx((0.25, 0.01 * 48**0.5))
    assert out.linf == pytest.approx(0.13)


def test_metric_sets_merge_once_and_label_repeats():
    Measurement, MetricSet = measurements.Measurement, measurements.MetricSet
    first = MetricSet((Measurement("psnr", 30.0, (30.0,), "jpeg"),))
    second = MetricSet((Measurement("psnr", 20.0, (20.0,), "jpeg"), Measurement("ssim", 0.9, (0.9,), "blur")))
    merged = first.merge(second, first, None)
    assert len(merged.measurements) == 3
    labels, metrics, cells = merged.table()
    assert labels == ["jpeg", "jpeg #2", "blur"] and metrics == ["psnr", "ssim"]
    assert cells[("jpeg #2", "psnr")] == 20.0


def test_report_writes_json_and_csv_and_shows_a_table(paths):
    a, b = _images(8)
    ctx = _ctx(paths)
    psnr = M.MeasurePSNR(image_a=a.movedim(1, -1), image_b=b.movedim(1, -1), label="noisy").run(ctx).metrics
    pert = M.MeasurePerturbation(image=b.movedim(1, -1), reference=a.movedim(1, -1), label="noisy").run(ctx).metrics
    same = M.MeasurePSNR(image_a=a.movedim(1, -1), image_b=a.movedim(1, -1), label="clean").run(ctx).metrics
    out = M.MetricsReport(metrics_1=psnr, metrics_2=pert, metrics_3=same, filename_prefix="runs/table").run(ctx)
    files = ctx.ui["files"]
    assert [f["filename"] for f in files] == ["table_00001_.json", "table_00001_.csv"]
    assert all(f["subfolder"] == "runs" and f["type"] == "output" for f in files)
    data = json.loads((paths.output_dir / "runs" / "table_00001_.json").read_text())
    assert [m["metric"] for m in data["measurements"]] == ["psnr", "perturbation_linf", "perturbation_l2", "psnr"]
    assert data["table"]["clean"]["psnr"] == "inf"
    assert len(data["measurements"][0]["items"]) == 3
    with open(paths.output_dir / "runs" / "table_00001_.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["value"]) == pytest.approx(data["measurements"][0]["value"], abs=1e-12)
    assert rows[0]["n"] == "3" and len(rows[0]["items"].split(";")) == 3
    lines = out.table.splitlines()
    assert lines[0].split() == ["label", "psnr", "perturbation_linf", "perturbation_l2"]
    assert lines[2].split() == ["clean", "inf"]
    assert ctx.ui["text"] == [out.table]
    M.MetricsReport(metrics_1=psnr, filename_prefix="runs/table").run(ctx)
    assert (paths.output_dir / "runs" / "table_00002_.csv").is_file()


def test_report_refuses_a_prefix_outside_the_output_folder(paths):
    problems = M.MetricsReport.check_constants({"filename_prefix": "../escape"}, _ctx(paths))
    assert problems and problems[0][0] == "filename_prefix"


def test_ssim_valid_border_matches_skimage():
    """border 'valid' is skimage's structural_similarity (Gaussian weights, population covariance); the
    default 'reflect' is torchmetrics' and differs from it by about 1e-2 on 32x32 images."""
    sk = pytest.importorskip("skimage.metrics")
    a, b = _images(3)
    ours = metrics.ssim_and_cs(a.double(), b.double(), 1.5, border="valid")[0]
    for i in range(a.shape[0]):
        ref = sk.structural_similarity(a[i].double().numpy(), b[i].double().numpy(), channel_axis=0,
                                            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)
    reflect = metrics.ssim_and_cs(a.double(), b.double(), 1.5)[0]
    assert (reflect - ours).abs().max() > 1e-3, "the two conventions should differ on small images"
    node = M.MeasureSSIM(image_a=a.movedim(1, -1), image_b=b.movedim(1, -1), border="valid").run(_ctx())
    assert node.ssim == pytest.approx(ours.mean().item(), abs=1e-6)
