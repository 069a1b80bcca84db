"""tools/memory_soak.py: a reduced soak of the demo (predict + draw) stays flat, and the same
measurement does fail for a predictor that holds on to its outputs (a leak)."""

import json
import tempfile

import pytest
import torch

from tools.memory_soak import DEFAULT_CONFIG, SMALL_MODEL, build_demo, main, soak, synthetic_images

SMALL_SIZES = ((96, 96), (80, 112), (112, 80), (96, 96))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reduced_soak_of_the_demo_is_flat(tmp_path, one_thread):
    out = tmp_path / "soak.json"
    status = main(
        [
            "--small-model",
            "--images",
            "60",
            "--every",
            "10",
            "--warmup",
            "20",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert [n for n, _ in result["points"]] == [0, 10, 20, 30, 40, 50, 60]
    assert status == 0 and result["flat"], result
    assert result["growth_mb"] <= 4.0


def test_the_soak_detects_a_predictor_that_keeps_its_outputs(one_thread):
    with tempfile.TemporaryDirectory() as folder:
        predictor, _ = build_demo(DEFAULT_CONFIG, SMALL_MODEL, folder, draw=False)
        kept = []

        def leaking(image):
            kept.append(predictor(image))  # e.g. a cache of results that is never emptied

        with torch.no_grad():
            honest = soak(
                predictor, synthetic_images(40, SMALL_SIZES), 10, 10, 4.0, report=lambda _: None
            )
            leaky = soak(
                leaking,
                synthetic_images(40, SMALL_SIZES, seed=1),
                10,
                10,
                4.0,
                report=lambda _: None,
            )
    assert honest.flat, honest.points
    assert not leaky.flat and leaky.growth_mb > 8.0, leaky.points
