"""Broken images and annotation PNGs in training and evaluation sets: an error naming the file
and the dataset, or (DATALOADER.SKIP_BROKEN_SAMPLES) skipped with a count in the log, up to
DATALOADER.MAX_BROKEN_FRACTION; through the loaders in-process and through train_net.py."""

import itertools
import logging
import os
import re

import pytest

from dinat_m2f.data.broken_samples import BrokenSampleError, skipped_image_ids
from dinat_m2f.data.dataset_mappers import build_dataset_mapper
from dinat_m2f.data.loaders import build_test_loader, build_train_loader

from ..engine.train_net_runner import CONFIG, SMALL_MODEL, run_train_net
from ..log_capture import captured_log

_counter = itertools.count()


@pytest.fixture
def shapes(tmp_path):
    """A fresh built-in dataset (8 train / 4 val images) registered under a new prefix:
    (root folder of its files, train dataset name, val dataset name)."""
    from dinat_m2f.data.datasets.builtin_shapes import register_builtin_shapes
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    generate_builtin_shapes(str(tmp_path), num_train=8, num_val=4, size=96, seed=0)
    prefix = f"broken_shapes_{next(_counter)}"
    register_builtin_shapes(str(tmp_path), prefix=prefix)
    return (
        os.path.join(str(tmp_path), "builtin_shapes"),
        f"{prefix}_train_panoptic_with_sem_seg",
        f"{prefix}_val_panoptic_with_sem_seg",
    )


def skipping(fraction: float) -> list[str]:
    """Opts that skip broken samples, up to `fraction` of a dataset."""
    return [
        "DATALOADER.SKIP_BROKEN_SAMPLES", "True",
        "DATALOADER.MAX_BROKEN_FRACTION", str(fraction),
    ]  # fmt: skip


def _cfg(train: str, val: str, *opts: str):
    from dinat_m2f.engine.setup import load_cfg

    return load_cfg(
        CONFIG,
        [*SMALL_MODEL, "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)", *opts],
    )


def _garble(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"this is not an image")


def _truncate(path: str) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])


def _batches(cfg, n: int) -> list[list[dict]]:
    loader = build_train_loader(cfg, build_dataset_mapper(cfg, is_train=True))
    return list(itertools.islice(iter(loader), n))


@pytest.mark.parametrize(
    "damage",
    [
        "missing image",
        "garbled image",
        "truncated image",
        "missing panoptic PNG",
        "garbled panoptic PNG",
        "garbled semantic PNG",
    ],
)
def test_training_names_the_broken_file_and_its_dataset(shapes, damage):
    root, train, val = shapes
    path = {
        "image": f"{root}/train/000000000003.jpg",
        "panoptic PNG": f"{root}/panoptic_train/000000000003.png",
        "semantic PNG": f"{root}/panoptic_semseg_train/000000000003.png",
    }[damage.split(" ", 1)[1]]
    {"missing": os.remove, "garbled": _garble, "truncated": _truncate}[damage.split()[0]](path)
    with pytest.raises(BrokenSampleError) as error:
        _batches(_cfg(train, val), 8)  # 16 samples: every one of the 8 at least once
    message = str(error.value)
    assert message.startswith(f"training: broken sample in dataset '{train}': cannot read the ")
    assert f"'{path}'" in message
    assert "set DATALOADER.SKIP_BROKEN_SAMPLES True to skip such samples" in message
    kind = {
        "image": "image",
        "panoptic PNG": "panoptic annotation PNG",
        "semantic PNG": "label file",
    }
    assert f"cannot read the {kind[damage.split(' ', 1)[1]]} '{path}'" in message


def test_training_skips_broken_samples_with_a_count_in_the_log(shapes):
    root, train, val = shapes
    _garble(f"{root}/train/000000000003.jpg")
    os.remove(f"{root}/panoptic_train/000000000006.png")
    cfg = _cfg(train, val, *skipping(0.25))
    with captured_log("dinat_m2f.data", logging.WARNING) as log:
        batches = _batches(cfg, 12)  # 24 samples: 4 passes over the 6 readable images
    names = [os.path.basename(d["file_name"]) for batch in batches for d in batch]
    assert len(names) == 24
    assert "000000000003.jpg" not in names and "000000000006.jpg" not in names
    assert len(set(names)) == 6
    skipped = [m for m in log if "skipped a broken sample" in m]
    assert len(skipped) == 2  # each broken sample is logged when first found
    assert re.search(
        rf"training: skipped a broken sample \(1 of 8 in dataset '{train}' so far, 1 skips "
        r"in all\): cannot read the (image|panoptic annotation PNG)",
        skipped[0],
    )
    assert re.search(rf"\(2 of 8 in dataset '{train}' so far, 2 skips in all\)", skipped[1])


def test_skipping_stops_when_more_than_the_allowed_fraction_is_broken(shapes):
    root, train, val = shapes
    for i in (1, 4, 7):
        _garble(f"{root}/train/00000000000{i}.jpg")
    cfg = _cfg(train, val, *skipping(0.25))
    with pytest.raises(
        BrokenSampleError,
        match=re.escape(
            f"training: 3 broken samples found in dataset '{train}' (8 samples), more than "
            "DATALOADER.MAX_BROKEN_FRACTION=0.25 allows (2); the last: cannot read the image"
        ),
    ):
        _batches(cfg, 20)


def test_a_fully_broken_dataset_fails_even_when_skipping(shapes):
    root, train, val = shapes
    for name in os.listdir(f"{root}/train"):
        _garble(f"{root}/train/{name}")  # (the loader itself refuses a missing first image)
    cfg = _cfg(train, val, "DATALOADER.SKIP_BROKEN_SAMPLES", "True")
    with pytest.raises(BrokenSampleError, match=r"2 broken samples found .* allows \(1\)"):
        _batches(cfg, 1)


def test_evaluation_names_or_skips_a_broken_image_or_annotation(shapes):
    root, train, val = shapes
    image = f"{root}/val/000000100002.jpg"
    annotation = f"{root}/panoptic_val/000000100004.png"
    _truncate(image)
    _garble(annotation)
    with pytest.raises(BrokenSampleError) as error:
        list(build_test_loader(_cfg(train, val), val))
    assert str(error.value).startswith(
        f"evaluation of '{val}': broken sample in dataset '{val}': cannot read the image '{image}'"
    )

    cfg = _cfg(train, val, *skipping(0.5))
    loader = build_test_loader(cfg, val)
    with captured_log("dinat_m2f.data", logging.WARNING) as log:
        batches = list(loader)
    assert len(loader) == 4 and len(batches) == 2
    assert [os.path.basename(b[0]["file_name"]) for b in batches] == [
        "000000100001.jpg",
        "000000100003.jpg",
    ]
    assert skipped_image_ids(val) == {100002, 100004}
    assert f"cannot read the panoptic annotation PNG '{annotation}'" in "\n".join(log)
    assert (
        f"evaluation of '{val}': skipped 2 broken samples of 4; the metrics leave them out" in log
    )


def test_train_net_names_a_broken_training_image(shapes):
    root, train, val = shapes
    image = f"{root}/train/000000000005.jpg"
    _garble(image)
    datasets_root = os.path.dirname(root)
    result = run_train_net(
        datasets_root,
        os.path.join(datasets_root, "out"),
        overrides=["SOLVER.MAX_ITER", "6", "DATASETS.TEST", "()"],
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        "train_net: error: training: broken sample in dataset "
        "'builtin_shapes_train_panoptic_with_sem_seg': cannot read the image "
        f"'{image}': UnidentifiedImageError"
    ) in result.stderr


def test_train_net_skips_broken_samples_in_training_and_evaluation(shapes):
    root, train, val = shapes
    _garble(f"{root}/train/000000000005.jpg")
    _truncate(f"{root}/panoptic_val/000000100003.png")
    datasets_root = os.path.dirname(root)
    result = run_train_net(
        datasets_root,
        os.path.join(datasets_root, "out"),
        overrides=[
            "SOLVER.MAX_ITER",
            "6",
            "SOLVER.CHECKPOINT_PERIOD",
            "100",
            *skipping(0.25),
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
            "False",
        ],
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert (
        "training: skipped a broken sample (1 of 8 in dataset "
        "'builtin_shapes_train_panoptic_with_sem_seg' so far, 1 skips in all): cannot read "
        f"the image '{root}/train/000000000005.jpg'"
    ) in log
    assert (
        "evaluation of 'builtin_shapes_val_panoptic_with_sem_seg': skipped 1 broken samples "
        "of 4; the metrics leave them out"
    ) in log
    assert (
        "PQ of builtin_shapes_val_panoptic_with_sem_seg leaves out the 1 images skipped as broken"
        in log
    )
    assert re.search(r"copypaste: Task: panoptic_seg", log) and re.search(
        r"copypaste: Task: sem_seg", log
    )
