"""Dataset registration: names, metadata, loading, and errors for missing/malformed data."""

import json
import os
import shutil

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import dinat_m2f.data.datasets  # noqa: F401  (registers everything)
from dinat_m2f.data.datasets import DatasetFormatError, DatasetNotFoundError
from dinat_m2f.data.datasets.builtin_shapes import SHAPES_CATEGORIES, register_builtin_shapes

from .conftest import PREFIX, SMALL

EXPECTED = [
    "coco_2017_train_panoptic_with_sem_seg",
    "coco_2017_val_panoptic_with_sem_seg",
    "coco_2017_train_panoptic",
    "coco_2017_val_panoptic",
    "coco_2017_train",
    "coco_2017_val",
    "ade20k_sem_seg_train",
    "ade20k_sem_seg_val",
    "ade20k_panoptic_train",
    "ade20k_panoptic_val",
    "ade20k_instance_train",
    "ade20k_instance_val",
    "ade20k_full_sem_seg_train",
    "ade20k_full_sem_seg_val",
    "cityscapes_fine_sem_seg_train",
    "cityscapes_fine_sem_seg_val",
    "cityscapes_fine_instance_seg_train",
    "cityscapes_fine_instance_seg_val",
    "cityscapes_fine_panoptic_train",
    "cityscapes_fine_panoptic_val",
    "mapillary_vistas_sem_seg_train",
    "mapillary_vistas_sem_seg_val",
    "mapillary_vistas_panoptic_train",
    "mapillary_vistas_panoptic_val",
    "builtin_shapes_train_panoptic_with_sem_seg",
    "builtin_shapes_val_panoptic_with_sem_seg",
    "builtin_shapes_train_instance",
    "builtin_shapes_val_instance",
    "builtin_shapes_train_sem_seg",
    "builtin_shapes_val_sem_seg",
]


def test_all_names_registered():
    registered = set(DatasetCatalog.list())
    assert not [n for n in EXPECTED if n not in registered]


def test_coco_metadata():
    meta = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(meta.thing_classes) == 80 and len(meta.stuff_classes) == 133
    assert meta.thing_classes[0] == "person" and meta.stuff_classes[-1] == "rug-merged"
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79
    assert meta.stuff_dataset_id_to_contiguous_id[200] == 132
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.label_divisor == 1000
    assert meta.ignore_label == 255
    assert meta.json_file.endswith("instances_val2017.json")
    assert meta.sem_seg_root.endswith("panoptic_semseg_val2017")
    alias = MetadataCatalog.get("coco_2017_val_panoptic")  # Mask2Former's alias
    assert alias.thing_classes == meta.thing_classes and alias.panoptic_json == meta.panoptic_json


def test_ade20k_metadata():
    pan = MetadataCatalog.get("ade20k_panoptic_train")
    assert len(pan.stuff_classes) == 150 and len(pan.thing_classes) == 100
    assert pan.thing_dataset_id_to_contiguous_id[7] == 7  # bed
    assert 0 not in pan.thing_dataset_id_to_contiguous_id  # wall is stuff
    ins = MetadataCatalog.get("ade20k_instance_val")
    assert len(ins.thing_classes) == 100 and ins.thing_dataset_id_to_contiguous_id[7] == 0
    assert ins.evaluator_type == "coco"
    full = MetadataCatalog.get("ade20k_full_sem_seg_val")
    assert full.ignore_label == 65535 and full.evaluator_type == "sem_seg"


def test_builtin_shapes_loads_all_formats(shapes):
    root, names = shapes
    assert len(names) == 8
    things = [c["name"] for c in SHAPES_CATEGORIES if c["isthing"]]
    for split in ("train", "val"):
        n = SMALL[f"num_{split}"]
        pan = DatasetCatalog.get(f"{PREFIX}_{split}_panoptic_with_sem_seg")
        assert len(pan) == n
        assert DatasetCatalog.get(f"{PREFIX}_{split}_panoptic") == pan
        d = pan[0]
        assert set(d) >= {
            "file_name",
            "image_id",
            "pan_seg_file_name",
            "sem_seg_file_name",
            "segments_info",
            "height",
            "width",
        }
        for seg in d["segments_info"]:
            assert 0 <= seg["category_id"] < len(SHAPES_CATEGORIES)
            assert seg["isthing"] == (seg["category_id"] < len(things))
        meta = MetadataCatalog.get(f"{PREFIX}_{split}_panoptic_with_sem_seg")
        assert meta.thing_classes == things and len(meta.stuff_classes) == 8
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
        assert meta.stuff_dataset_id_to_contiguous_id[14] == 7

        inst = DatasetCatalog.get(f"{PREFIX}_{split}_instance")
        assert len(inst) == n
        by_id = {d["image_id"]: d for d in pan}
        for d in inst:
            pan_things = [s for s in by_id[d["image_id"]]["segments_info"] if s["isthing"]]
            assert [a["category_id"] for a in d["annotations"]] == [
                s["category_id"] for s in pan_things
            ]  # contiguous thing ids agree between the two registrations
        meta = MetadataCatalog.get(f"{PREFIX}_{split}_instance")
        assert meta.thing_classes == things and meta.evaluator_type == "coco"

        sem = DatasetCatalog.get(f"{PREFIX}_{split}_sem_seg")
        assert len(sem) == n and all(os.path.isfile(d["sem_seg_file_name"]) for d in sem)
        assert MetadataCatalog.get(f"{PREFIX}_{split}_sem_seg").stuff_classes == meta_names()


def meta_names():
    return [c["name"] for c in SHAPES_CATEGORIES]


def test_missing_dataset_names_path_and_readme(tmp_path):
    missing = tmp_path / "nowhere"
    register_builtin_shapes(str(missing), prefix="missing_shapes")  # lazy: no error yet
    for name in (
        "missing_shapes_train_panoptic_with_sem_seg",
        "missing_shapes_train_instance",
        "missing_shapes_val_sem_seg",
    ):
        with pytest.raises(DatasetNotFoundError) as e:
            DatasetCatalog.get(name)
        msg = str(e.value)
        assert str(missing) in msg and "datasets/README.md" in msg and "builtin_shapes/" in msg
        assert isinstance(e.value, FileNotFoundError)


def test_builtin_detectron2_names_are_guarded():
    from dinat_m2f.data.datasets.layout import datasets_root

    root = datasets_root()
    for name, folder in (
        ("coco_2017_val", "coco"),
        ("coco_2017_val_panoptic", "coco"),
        ("ade20k_sem_seg_val", "ADEChallengeData2016"),
        ("ade20k_panoptic_val", "ADEChallengeData2016"),
        ("ade20k_full_sem_seg_val", "ADE20K_2021_17_01"),
        ("cityscapes_fine_sem_seg_val", "cityscapes"),
        ("cityscapes_fine_panoptic_val", "cityscapes"),
    ):
        if os.path.isdir(os.path.join(root, folder)):
            continue  # a real dataset is present
        with pytest.raises(DatasetNotFoundError, match="datasets/README.md") as e:
            DatasetCatalog.get(name)
        assert os.path.abspath(os.path.join(root, folder)) in str(e.value)


def test_malformed_json_is_reported(shapes_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(os.path.join(shapes_root, "builtin_shapes"), root / "builtin_shapes")
    pan_json = root / "builtin_shapes" / "annotations" / "panoptic_val.json"
    data = json.loads(pan_json.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 99
    pan_json.write_text(json.dumps(data))
    (root / "builtin_shapes" / "annotations" / "instances_val.json").write_text("{not json")
    register_builtin_shapes(str(root), prefix="bad_shapes")
    with pytest.raises(DatasetFormatError, match="category_id 99"):
        DatasetCatalog.get("bad_shapes_val_panoptic_with_sem_seg")
    with pytest.raises(DatasetFormatError, match="instances_val.json"):
        DatasetCatalog.get("bad_shapes_val_instance")


def test_ade20k_full_needs_its_class_list(tmp_path, monkeypatch):
    from dinat_m2f.data.datasets.ade20k_full import register_all_ade20k_full

    base = tmp_path / "ADE20K_2021_17_01"
    for d in ("images_detectron2/validation", "annotations_detectron2/validation"):
        (base / d).mkdir(parents=True)
    register_all_ade20k_full(str(tmp_path))
    try:
        with pytest.raises(DatasetNotFoundError, match="ade20k_full_categories.json"):
            DatasetCatalog.get("ade20k_full_sem_seg_val")
        cats = [{"id": 5, "trainId": 0, "name": "a"}, {"id": 9, "trainId": 1, "name": "b"}]
        (base / "ade20k_full_categories.json").write_text(json.dumps(cats))
        with pytest.raises(DatasetFormatError, match="no '\\*tif' label files"):
            DatasetCatalog.get("ade20k_full_sem_seg_val")
        assert MetadataCatalog.get("ade20k_full_sem_seg_val").stuff_classes == ["a", "b"]
    finally:
        from dinat_m2f.data.datasets.layout import datasets_root

        register_all_ade20k_full(datasets_root())
