"""What a run costs: the test timer's warm-up rule, timing that changes no detection, and a
training run on CPU logging its peak RSS and test time under the CPU names (never the GPU's)."""

import torch

from harness.track.names import PERF_KEYS, perf_metrics
from harness.train.engine import InferenceTimer, predict
from harness.train.evaluation import peak_memory
from tests.conftest import EXPERIMENTS
from tests.train.helpers import runs, tiny_overrides


def test_the_timer_leaves_out_the_warm_up_images_but_keeps_the_last_batch():
    t = InferenceTimer(torch.device("cpu"), warmup=5)
    t.batches = [(9.0, 2), (9.0, 2), (9.0, 2), (1.0, 2), (2.0, 1)]  # 6 images of warm-up
    assert t.totals() == (3.0, 3)
    t.batches = [(4.0, 1), (2.0, 2)]  # too few images: the last batch still counts
    assert t.totals() == (2.0, 2)
    assert InferenceTimer(torch.device("cpu")).totals() == (0.0, 0)


def test_perf_names_keep_cpu_numbers_apart_from_gpu_ones():
    assert perf_metrics("cuda", memory_gb=29.3, ms_per_image=71.0) == {"perf.train_mem_gb": 29.3,
                                                                       "perf.test_ms_per_image": 71.0}
    assert perf_metrics("cpu", memory_gb=0.4, ms_per_image=None) == {"perf.cpu.train_rss_gb": 0.4}
    assert set(PERF_KEYS["cpu"].values()).isdisjoint(PERF_KEYS["cuda"].values())
    assert peak_memory(torch.device("cpu")) > 2**20  # a Python process with torch: more than 1 MiB


class _Net(torch.nn.Module):
    def detect(self, images, sizes):
        out = []
        for i in range(images.shape[0]):
            boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 5.0, 9.0]]) + i
            d = (boxes, torch.tensor([0.9, 0.3]), torch.tensor([1, 0]))
            out.append({"nms": d, "nms_free": d})
        return out


def test_timing_changes_no_detection():
    loader = [{"images": torch.zeros(2, 3, 8, 8), "image_sizes": [(8, 8)] * 2, "orig_sizes": [(16, 16)] * 2,
               "image_ids": [k, k + 1]} for k in (0, 2, 4)]
    timer = InferenceTimer(torch.device("cpu"), warmup=2)
    timed = predict(_Net(), loader, torch.device("cpu"), timer=timer)
    assert timed == predict(_Net(), loader, torch.device("cpu"))
    assert len(timer.batches) == 3 and timer.totals()[1] == 4


def test_a_cpu_run_logs_its_rss_and_test_time_under_cpu_names(run_cli, tmp_path):
    over = tiny_overrides(tmp_path, iters=1, ckpt=1000)
    code, _, err = run_cli("train", EXPERIMENTS / "quickstart.yaml", "--row", "FCOS", "--workspace", tmp_path,
                           "--set-file", over)
    assert code == 0, err
    r = runs(tmp_path, "quickstart").iloc[0]
    assert r["metrics.perf.cpu.train_rss_gb"] > 0.01 and r["metrics.perf.cpu.test_ms_per_image"] > 0
    assert "metrics.perf.train_mem_gb" not in r and "metrics.perf.test_ms_per_image" not in r


def test_a_trained_row_shows_its_cpu_memory_and_test_time_in_the_fcos_table(run_cli, tmp_path):
    # a quickstart-scale FCOS row of experiments/fcos.yaml, trained on CPU: the official table's
    # measured columns show its numbers, labelled as CPU numbers (never blank)
    import re

    over = tiny_overrides(tmp_path, iters=2, ckpt=1000, extra="data.train_extra: []\ntrain.epochs: null\n")
    spec = EXPERIMENTS / "fcos.yaml"
    code, _, err = run_cli("train", spec, "--row", "FCOS_R_50_FPN_1x", "--workspace", tmp_path / "ws",
                           "--set-file", over)
    assert code == 0, err
    out = tmp_path / "fcos.md"
    code, _, err = run_cli("report", spec, "--workspace", tmp_path / "ws", "--set-file", over, "--out", out,
                           "--allow-empty")
    assert code == 0, err
    row = next(line for line in out.read_text().splitlines() if line.startswith("| FCOS_R_50_FPN_1x |"))
    assert re.search(r"\| \d+\.\d \(CPU RSS\) \(29\.3\) \| No \| \d+(\.\d)?ms \(CPU\) \(71ms\) \|", row), row
