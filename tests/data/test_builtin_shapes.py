"""The built-in synthetic dataset: formats, consistency between formats, determinism."""

import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from dinat_m2f.data.datasets.builtin_shapes import SHAPES_CATEGORIES, builtin_shapes_paths
from dinat_m2f.data.formats import mask_bbox_xywh, panoptic_to_semantic
from dinat_m2f.data.synthetic import generate_builtin_shapes
from dinat_m2f.panoptic_ids import rgb2id

from .conftest import SMALL


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("split", ["train", "val"])
def test_tree_and_counts(shapes_root, split):
    p = builtin_shapes_paths(shapes_root, split)
    n = SMALL[f"num_{split}"]
    for key, ext in (("image_root", ".jpg"), ("panoptic_root", ".png"), ("sem_seg_root", ".png")):
        files = sorted(os.listdir(p[key]))
        assert len(files) == n and all(f.endswith(ext) for f in files), (key, files)
    pan = _json(p["panoptic_json"])
    assert len(pan["images"]) == len(pan["annotations"]) == n
    assert pan["categories"] == SHAPES_CATEGORIES
    for im in pan["images"]:
        with Image.open(os.path.join(p["image_root"], im["file_name"])) as img:
            assert img.size == (im["width"], im["height"]) == (SMALL["size"], SMALL["size"])
            assert img.mode == "RGB"


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_png_matches_segments_info(shapes_root, split):
    p = builtin_shapes_paths(shapes_root, split)
    pan = _json(p["panoptic_json"])
    cats = {c["id"]: c for c in pan["categories"]}
    n_things = 0
    for ann in pan["annotations"]:
        with Image.open(os.path.join(p["panoptic_root"], ann["file_name"])) as im:
            assert im.mode == "RGB"
            ids = rgb2id(np.asarray(im))
        listed = [s["id"] for s in ann["segments_info"]]
        assert len(set(listed)) == len(listed)
        assert set(np.unique(ids).tolist()) - {0} == set(listed)
        assert (ids == 0).any(), "the void lines between stuff regions are missing"
        stuff_cats = [
            s["category_id"] for s in ann["segments_info"] if not cats[s["category_id"]]["isthing"]
        ]
        assert len(stuff_cats) == len(set(stuff_cats)) and 1 <= len(stuff_cats) <= 3
        for seg in ann["segments_info"]:
            mask = ids == seg["id"]
            assert seg["area"] == int(mask.sum()) > 0
            assert seg["bbox"] == mask_bbox_xywh(mask)
            assert seg["iscrowd"] == 0
            n_things += cats[seg["category_id"]]["isthing"]
    assert n_things >= len(pan["annotations"]), "expected at least one thing per image"


@pytest.mark.parametrize("split", ["train", "val"])
def test_instances_agree_with_panoptic(shapes_root, split):
    p = builtin_shapes_paths(shapes_root, split)
    coco = COCO(p["instances_json"])
    pan = _json(p["panoptic_json"])
    thing_ids = {c["id"] for c in SHAPES_CATEGORIES if c["isthing"]}
    assert set(coco.getCatIds()) == thing_ids
    for ann in pan["annotations"]:
        with Image.open(os.path.join(p["panoptic_root"], ann["file_name"])) as im:
            ids = rgb2id(np.asarray(im))
        things = [s for s in ann["segments_info"] if s["category_id"] in thing_ids]
        inst = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
        assert len(inst) == len(things)
        for seg, a in zip(things, inst):  # same order: drawing order
            mask = coco.annToMask(a).astype(bool)
            assert np.array_equal(mask, ids == seg["id"])
            assert a["category_id"] == seg["category_id"]
            assert a["area"] == float(mask_util.area(a["segmentation"])) == seg["area"]
            assert a["bbox"] == [float(v) for v in seg["bbox"]]
            assert a["iscrowd"] == 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_semantic_png_is_the_panoptic_conversion(shapes_root, split):
    p = builtin_shapes_paths(shapes_root, split)
    pan = _json(p["panoptic_json"])
    id_map = {c["id"]: i for i, c in enumerate(pan["categories"])}
    for ann in pan["annotations"]:
        with Image.open(os.path.join(p["panoptic_root"], ann["file_name"])) as im:
            ids = rgb2id(np.asarray(im))
        with Image.open(os.path.join(p["sem_seg_root"], ann["file_name"])) as im:
            assert im.mode == "L"
            semantic = np.asarray(im)
        assert np.array_equal(semantic, panoptic_to_semantic(ids, ann["segments_info"], id_map))
        assert set(np.unique(semantic).tolist()) <= set(range(len(id_map))) | {255}


def test_deterministic_and_idempotent(shapes_root, tmp_path):
    out = generate_builtin_shapes(str(tmp_path), **SMALL)
    assert not out["skipped"]
    a, b = os.path.join(shapes_root, "builtin_shapes"), out["path"]
    cmp = filecmp.dircmp(a, b)
    pending = [cmp]
    while pending:
        c = pending.pop()
        assert not c.left_only and not c.right_only, (c.left_only, c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors, (c.left, mismatch, errors)
        pending += c.subdirs.values()

    stamp = os.path.getmtime(os.path.join(b, "annotations", "panoptic_train.json"))
    again = generate_builtin_shapes(str(tmp_path), **SMALL)
    assert again["skipped"] and again["train"] == out["train"]
    assert os.path.getmtime(os.path.join(b, "annotations", "panoptic_train.json")) == stamp

    other = generate_builtin_shapes(str(tmp_path), **{**SMALL, "seed": 1, "num_train": 3})
    assert not other["skipped"] and len(os.listdir(os.path.join(b, "train"))) == 3
    with (
        open(os.path.join(b, "annotations", "panoptic_val.json"), "rb") as f1,
        open(os.path.join(a, "annotations", "panoptic_val.json"), "rb") as f2,
    ):
        assert f1.read() != f2.read()


def test_cli(tmp_path, capsys):
    from dinat_m2f.data.generate_builtin import main

    args = ["--root", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "64"]
    args.append("--quiet")
    assert main(args) == 0
    assert "wrote 2 train and 1 val images" in capsys.readouterr().out
    assert main(args) == 0
    assert "already generated" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "--size", "8", "--quiet"])
