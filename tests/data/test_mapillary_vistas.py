"""Mapillary Vistas: the preparation script on tiny trees in the official v1.2 and v2.0
layouts, the semantic and panoptic registrations that read them, layout errors naming the
path, and the evaluators the dataset gets."""

import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from dinat_m2f.data.datasets import DatasetNotFoundError
from dinat_m2f.data.datasets.layout import datasets_root
from dinat_m2f.data.datasets.mapillary_vistas import (
    IGNORE_LABEL,
    MAPILLARY_VISTAS_CATEGORIES,
    register_all_mapillary_vistas,
)
from dinat_m2f.panoptic_ids import id2rgb

from .conftest import REPO, load_script

# the builtin config whose Mapillary settings the evaluator and mapper tests read
SHAPES_CONFIG = os.path.join(
    REPO, "configs", "builtin", "maskformer2_dinat_mini_builtin_shapes.yaml"
)
STEMS = {"training": ["aaa_train1", "bbb_train2"], "validation": ["ccc_val1"]}
CAR, ROAD, PERSON = 55, 13, 19  # label indices (panoptic category id = index + 1)


def write_split(split_dir, stems, annotations_dir=None, categories=None):
    """One split in the official layout: images/*.jpg, labels/*.png (class index, mode P),
    panoptic/*.png (COCO ids) and panoptic/panoptic_2018.json; annotations under
    `annotations_dir` (v2.0 keeps them in v1.2/)."""
    annotations_dir = annotations_dir or split_dir
    for part, folder in (
        ("images", split_dir),
        ("labels", annotations_dir),
        ("panoptic", annotations_dir),
    ):
        os.makedirs(os.path.join(folder, part), exist_ok=True)
    images, annotations = [], []
    for k, stem in enumerate(stems):
        h, w = 6, 8
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            os.path.join(split_dir, "images", stem + ".jpg")
        )
        labels = np.full((h, w), ROAD, np.uint8)
        labels[:2, :3] = CAR
        labels[4:, 5:] = PERSON
        labels[5, 0] = IGNORE_LABEL  # unlabeled
        label_png = Image.fromarray(labels, mode="L").convert("P")  # v1.2 labels are palettized
        label_png.save(os.path.join(annotations_dir, "labels", stem + ".png"))
        ids = np.zeros((h, w), np.int64)
        segments = []
        for seg_id, (label, mask) in enumerate(
            [(ROAD, labels == ROAD), (CAR, labels == CAR), (PERSON, labels == PERSON)], start=1
        ):
            ids[mask] = seg_id * 7
            segments.append(
                {
                    "id": seg_id * 7,
                    "category_id": label + 1,
                    "iscrowd": 0,
                    "area": int(mask.sum()),
                    "bbox": [0, 0, 1, 1],
                }
            )
        Image.fromarray(id2rgb(ids)).save(os.path.join(annotations_dir, "panoptic", stem + ".png"))
        images.append({"id": stem, "file_name": stem + ".jpg", "height": h, "width": w})
        annotations.append(
            {"image_id": stem, "file_name": stem + ".png", "segments_info": segments}
        )
    info = {
        "images": images,
        "annotations": annotations,
        "categories": categories or MAPILLARY_VISTAS_CATEGORIES,
    }
    with open(os.path.join(annotations_dir, "panoptic", "panoptic_2018.json"), "w") as f:
        json.dump(info, f)


def write_download(folder, version="1.2"):
    for dirname, stems in STEMS.items():
        split = os.path.join(folder, dirname)
        write_split(split, stems, os.path.join(split, "v1.2") if version == "2.0" else None)


@pytest.fixture
def script():
    return load_script("prepare_mapillary_vistas")


@pytest.fixture
def registered(tmp_path):
    """Registers the Mapillary names under tmp_path/datasets; restores them afterwards."""
    root = tmp_path / "datasets"
    register_all_mapillary_vistas(str(root))
    yield root
    register_all_mapillary_vistas(datasets_root())


@pytest.mark.parametrize("version", ["1.2", "2.0"])
def test_script_lays_out_a_download_and_the_registrations_read_it(
    script, registered, tmp_path, version
):
    source = tmp_path / f"mapillary-vistas-v{version}"
    write_download(str(source), version)
    assert script.main(["--root", str(registered), "--source", str(source)]) == 0
    tree = registered / "mapillary_vistas" / "training"
    assert all((tree / part).is_symlink() for part in ("images", "labels", "panoptic"))
    # running again keeps the links
    assert script.main(["--root", str(registered), "--source", str(source)]) == 0

    sem = DatasetCatalog.get("mapillary_vistas_sem_seg_train")
    assert sorted(os.path.basename(d["file_name"]) for d in sem) == [
        "aaa_train1.jpg",
        "bbb_train2.jpg",
    ]
    labels = np.asarray(Image.open(sem[0]["sem_seg_file_name"]))
    assert labels[0, 0] == CAR and labels[5, 0] == IGNORE_LABEL

    pan = DatasetCatalog.get("mapillary_vistas_panoptic_val")
    assert len(pan) == 1 and pan[0]["image_id"] == "ccc_val1"
    assert pan[0]["sem_seg_file_name"].endswith(
        os.path.join("validation", "labels", "ccc_val1.png")
    )
    segments = {s["category_id"]: s["isthing"] for s in pan[0]["segments_info"]}
    assert segments == {ROAD: False, CAR: True, PERSON: True}  # contiguous id = label index


def test_script_in_place_and_registration_metadata(script, registered):
    write_download(str(registered / "mapillary_vistas"))
    assert script.main(["--root", str(registered)]) == 0  # nothing to link
    assert not (registered / "mapillary_vistas" / "training" / "labels").is_symlink()
    sem = MetadataCatalog.get("mapillary_vistas_sem_seg_val")
    assert len(sem.stuff_classes) == 65 and sem.ignore_label == IGNORE_LABEL
    assert sem.stuff_classes[CAR] == "Car" and sem.evaluator_type == "sem_seg"
    pan = MetadataCatalog.get("mapillary_vistas_panoptic_train")
    assert pan.ignore_label == IGNORE_LABEL and pan.label_divisor == 1000
    assert pan.evaluator_type == "mapillary_vistas_panoptic_seg"
    assert len(pan.stuff_classes) == 65 and len(pan.thing_classes) == 37
    assert pan.thing_dataset_id_to_contiguous_id[CAR + 1] == CAR
    assert ROAD + 1 not in pan.thing_dataset_id_to_contiguous_id
    assert pan.stuff_dataset_id_to_contiguous_id[ROAD + 1] == ROAD
    assert pan.panoptic_json.endswith(os.path.join("training", "panoptic", "panoptic_2018.json"))


def test_missing_dataset_is_a_layout_error_naming_the_path(registered):
    for name in ("mapillary_vistas_sem_seg_train", "mapillary_vistas_panoptic_val"):
        with pytest.raises(DatasetNotFoundError) as info:
            DatasetCatalog.get(name)
        message = str(info.value)
        assert str(registered / "mapillary_vistas") in message
        assert "Mapillary Vistas" in message and "prepare_mapillary_vistas.py" in message


def test_script_errors_name_the_path(script, tmp_path, capsys):
    root = tmp_path / "datasets"
    with pytest.raises(SystemExit, match=r"Mapillary Vistas folder .*mapillary_vistas"):
        script.main(["--root", str(root)])

    source = tmp_path / "download"
    write_download(str(source))
    os.remove(source / "training" / "labels" / "bbb_train2.png")
    with pytest.raises(SystemExit) as info:
        script.main(["--root", str(root), "--source", str(source)])
    assert "1 files listed by panoptic_2018.json are missing" in str(info.value)
    assert os.path.join("training", "labels", "bbb_train2.png") in str(info.value)


def test_script_refuses_other_label_sets_and_bad_pngs(script, tmp_path):
    source = tmp_path / "v2_labels"
    v2 = [dict(c, id=c["id"]) for c in MAPILLARY_VISTAS_CATEGORIES] + [
        {"id": 66, "name": "Parking Aisle", "isthing": 0}
    ]
    write_split(str(source / "training"), STEMS["training"], categories=v2)
    with pytest.raises(SystemExit, match=r"has 66 categories, not the 65 of Mapillary Vistas v1.2"):
        script.main(["--root", str(tmp_path / "a"), "--source", str(source), "--splits", "train"])

    source = tmp_path / "bad_label"
    write_split(str(source / "training"), STEMS["training"])
    label = source / "training" / "labels" / "aaa_train1.png"
    Image.fromarray(np.full((6, 8), 70, np.uint8)).save(label)
    with pytest.raises(SystemExit, match=r"label 70 is above 65"):
        script.main(["--root", str(tmp_path / "b"), "--source", str(source), "--splits", "train"])
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(label)
    with pytest.raises(SystemExit, match=r"a label PNG has one channel"):
        script.main(["--root", str(tmp_path / "c"), "--source", str(source), "--splits", "train"])


def test_mapillary_panoptic_gets_pq_and_miou(registered):
    from dinat_m2f.engine.setup import load_cfg
    from dinat_m2f.evaluation.evaluator_factory import build_evaluator
    from dinat_m2f.evaluation.panoptic_evaluator import COCOPanopticEvaluator

    write_download(str(registered / "mapillary_vistas"))
    cfg = load_cfg(SHAPES_CONFIG, ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"])
    evaluators = build_evaluator(cfg, "mapillary_vistas_panoptic_val", str(registered / "out"))
    kinds = [type(e).__name__ for e in evaluators._evaluators]
    assert kinds == [COCOPanopticEvaluator.__name__, "SemSegEvaluator"]
    assert evaluators._evaluators[1]._ignore_label == IGNORE_LABEL


def test_mask2former_mappers_read_the_tiny_tree(registered):
    """The panoptic mapper of Mask2Former's Mapillary configs turns a dict into instances with
    contiguous classes and semantic labels padded with 65."""
    import torch

    from dinat_m2f.data import build_dataset_mapper
    from dinat_m2f.engine.setup import load_cfg

    write_download(str(registered / "mapillary_vistas"))
    cfg = load_cfg(
        SHAPES_CONFIG,
        [
            "DATASETS.TRAIN",
            "('mapillary_vistas_panoptic_train',)",
            "INPUT.DATASET_MAPPER_NAME",
            "mask_former_panoptic",
            "INPUT.MIN_SIZE_TRAIN",
            "(6,)",
            "INPUT.MAX_SIZE_TRAIN",
            "8",
            "INPUT.SIZE_DIVISIBILITY",
            "16",
            "INPUT.CROP.ENABLED",
            "False",
            "INPUT.COLOR_AUG_SSD",
            "False",
        ],
    )
    mapper = build_dataset_mapper(cfg, is_train=True)
    dicts = DatasetCatalog.get("mapillary_vistas_panoptic_train")
    torch.manual_seed(0)
    out = mapper(dicts[0])
    assert out["image"].shape[-2:] == (16, 16)
    assert sorted(out["instances"].gt_classes.tolist()) == sorted([ROAD, CAR, PERSON])
    assert (out["sem_seg"][6:, :] == IGNORE_LABEL).all()  # padding
