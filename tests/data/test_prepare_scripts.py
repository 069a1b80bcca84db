"""The preparation scripts under datasets/, on tiny inputs in the official formats."""

import json
import os
import pickle

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools.coco import COCO

from dinat_m2f.data.datasets.layout import datasets_root
from dinat_m2f.panoptic_ids import id2rgb, rgb2id

from .conftest import load_script


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _jpg(path, h, w, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    _save(path, rgb)


# --- COCO ------------------------------------------------------------------------------------
def test_coco_semantic_from_panoptic(tmp_path):
    script = load_script("prepare_coco_semantic_annos_from_panoptic_annos")
    coco = tmp_path / "coco"
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[:3] = 5000  # person (id 1)
    ids[3:, :4] = 77  # rug-merged (id 200)
    ids[3:, 4:] = 301  # crowd person: still labeled
    _save(str(coco / "panoptic_val2017" / "000000000001.png"), id2rgb(ids))
    segments = [
        {"id": 5000, "category_id": 1, "iscrowd": 0, "area": 24, "bbox": [0, 0, 8, 3]},
        {"id": 77, "category_id": 200, "iscrowd": 0, "area": 12, "bbox": [0, 3, 4, 3]},
        {"id": 301, "category_id": 1, "iscrowd": 1, "area": 12, "bbox": [4, 3, 4, 3]},
    ]
    ann = {"image_id": 1, "file_name": "000000000001.png", "segments_info": segments}
    (coco / "annotations").mkdir()
    (coco / "annotations" / "panoptic_val2017.json").write_text(
        json.dumps({"images": [], "annotations": [ann], "categories": []})
    )
    assert script.main(["--root", str(tmp_path), "--splits", "val2017", "--workers", "1"]) == 0
    sem = np.asarray(Image.open(coco / "panoptic_semseg_val2017" / "000000000001.png"))
    expected = np.full((6, 8), 0, dtype=np.uint8)
    expected[3:, :4] = 132
    assert np.array_equal(sem, expected)

    with pytest.raises(SystemExit) as e:
        script.main(["--root", str(tmp_path), "--splits", "train2017"])
    assert "panoptic_train2017.json" in str(e.value) and "README" in str(e.value)


# --- ADE20K ----------------------------------------------------------------------------------
def _ade_tree(root):
    """Two images per split: semantic labels + instance PNGs in the official formats."""
    ade = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in (("train", "training"), ("val", "validation")):
        for k in (1, 2):
            stem = f"ADE_{split}_{k:08d}"
            _jpg(os.path.join(ade, "images", dirname, stem + ".jpg"), 6, 8, k)
            sem = np.zeros((6, 8), dtype=np.uint8)  # 0 unlabeled
            sem[:2] = 1  # wall (stuff)
            sem[2:, :4] = 8  # bed (thing, label 8)
            sem[2:, 4:] = 3  # sky (stuff)
            sem[5, 7] = 0
            _save(os.path.join(ade, "annotations", dirname, stem + ".png"), sem)
            ins = np.zeros((6, 8, 3), dtype=np.uint8)
            ins[2:4, :4] = (1, 1, 0)  # instance class 1 (bed), instance 1
            ins[4:, :3] = (1, 2, 0)  # bed, instance 2 (one bed pixel column left without)
            ins[1, 0] = (1, 2, 0)  # instance 2 also covers a wall pixel: drawn over the stuff
            _save(os.path.join(ade, "annotations_instance", dirname, stem + ".png"), ins)
    return ade


def test_ade20k_sem_seg_labels(tmp_path):
    script = load_script("prepare_ade20k_sem_seg")
    out = script.convert_labels(np.array([[0, 1, 150], [7, 0, 2]], dtype=np.uint8))
    assert out.dtype == np.uint8 and out.tolist() == [[255, 0, 149], [6, 255, 1]]
    with pytest.raises(ValueError, match="151"):
        script.convert_labels(np.array([[151]], dtype=np.uint8))
    with pytest.raises(SystemExit, match="ADEChallengeData2016"):
        script.main(["--root", str(tmp_path)])


def test_ade20k_panoptic_and_instance(tmp_path):
    ade = _ade_tree(str(tmp_path))
    for name in ("prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg"):
        assert load_script(name).main(["--root", str(tmp_path)]) == 0

    pan = json.loads(open(os.path.join(ade, "ade20k_panoptic_val.json")).read())
    assert len(pan["categories"]) == 150 and sum(c["isthing"] for c in pan["categories"]) == 100
    ann = pan["annotations"][0]
    assert ann["image_id"] == "ADE_val_00000001" and ann["file_name"] == "ADE_val_00000001.png"
    ids = rgb2id(np.asarray(Image.open(os.path.join(ade, "ade20k_panoptic_val", ann["file_name"]))))
    by_cat = {}
    for seg in ann["segments_info"]:
        mask = ids == seg["id"]
        assert seg["area"] == mask.sum() and seg["iscrowd"] == 0
        by_cat.setdefault(seg["category_id"], []).append(mask)
    assert sorted(by_cat) == [0, 2, 7]  # wall, sky, bed
    assert len(by_cat[7]) == 2 and by_cat[0][0].sum() == 15  # one wall pixel taken by a bed
    assert by_cat[7][1][1, 0] and by_cat[7][1].sum() == 7
    assert ids[4:, 3].tolist() == [0, 0]  # bed pixels without an instance are void
    assert ids[5, 7] == 0

    coco = COCO(os.path.join(ade, "ade20k_instance_val.json"))
    assert len(coco.getCatIds()) == 100 and 7 in coco.getCatIds()
    anns = coco.loadAnns(coco.getAnnIds(imgIds=["ADE_val_00000001"]))
    assert [a["category_id"] for a in anns] == [7, 7]
    for a, mask in zip(anns, by_cat[7]):
        assert np.array_equal(coco.annToMask(a).astype(bool), mask)

    # the registrations load them (category ids mapped; semantic labels from the sem script)
    from dinat_m2f.data.datasets.ade20k import register_all_ade20k

    register_all_ade20k(str(tmp_path))
    try:
        dicts = DatasetCatalog.get("ade20k_panoptic_val")
        assert len(dicts) == 2 and os.path.isfile(dicts[0]["sem_seg_file_name"])
        assert sorted(s["category_id"] for s in dicts[0]["segments_info"]) == [0, 2, 7, 7]
        sem = np.asarray(Image.open(dicts[0]["sem_seg_file_name"]))
        assert sem[0, 0] == 0 and sem[2, 0] == 7 and sem[5, 7] == 255
        inst = DatasetCatalog.get("ade20k_instance_val")
        assert [a["category_id"] for a in inst[0]["annotations"]] == [0, 0]  # bed: thing 0
        assert MetadataCatalog.get("ade20k_panoptic_val").evaluator_type == "ade20k_panoptic_seg"
    finally:
        register_all_ade20k(datasets_root())


def test_ade20k_instance_png_checks(tmp_path):
    script = load_script("prepare_ade20k_pan_seg")
    with pytest.raises(ValueError, match="RGB uint8"):
        script.split_instance_png(np.zeros((4, 4), dtype=np.uint8), "x.png")
    bad = np.zeros((4, 4, 3), dtype=np.uint8)
    bad[0, 0] = (101, 1, 0)
    with pytest.raises(ValueError, match="instance class 101"):
        script.instance_segments(bad, script.default_catid_mapping(), "x.png")
    table = tmp_path / "map.txt"
    rows = ["Instacne100\tSceneParse150\tFullADE20K", "1\t\t8\t\t165", "5\t\t15\t\t774"]
    table.write_text("\n".join(rows + ["5\t\t15\t\t783", ""]))
    assert script.read_catid_mapping(str(table)) == {1: 7, 5: 14}
    assert {k: v for k, v in script.default_catid_mapping().items() if k in (1, 5)} == {1: 7, 5: 14}


# --- ADE20K-Full -----------------------------------------------------------------------------
def _full_seg(values: np.ndarray) -> np.ndarray:
    seg = np.zeros(values.shape + (3,), dtype=np.uint8)
    seg[..., 0] = (values // 256) * 10 + 3  # the low digit of R is not part of the class
    seg[..., 1] = values % 256
    seg[..., 2] = 17  # instance bits
    return seg


def test_ade20k_full_helpers():
    script = load_script("prepare_ade20k_full_sem_seg")
    values = np.array([[0, 1, 2978], [300, 256, 3000]])
    assert np.array_equal(script.decode_class_mask(_full_seg(values)), values)
    presence = np.array([[1, 0, 2], [0, 0, 1], [3, 1, 1], [0, 1, 0]])  # 4 classes x 3 images
    cats = script.select_classes(presence, ["training", "training", "validation"], "abcd")
    assert [(c["id"], c["trainId"], c["name"]) for c in cats] == [(3, 0, "c"), (1, 1, "a")]
    assert script.resized_size(600, 1000) == (512, 853)
    assert script.resized_size(400, 300) == (400, 300)
    assert script.resize_nearest(np.arange(4).reshape(2, 2), 4, 4).tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 3, 3],
        [2, 2, 3, 3],
    ]
    folder = "ADE20K_2021_17_01/images/ADE/validation/x/y"
    assert script.split_of(folder, "ADE_val_1.jpg") == "validation"


def test_ade20k_full_end_to_end(tmp_path):
    script = load_script("prepare_ade20k_full_sem_seg")
    base = tmp_path / "ADE20K_2021_17_01"
    files, folders = [], []
    images = (("train", "training", 1), ("train", "training", 2), ("val", "validation", 1))
    for split, dirname, k in images:
        folder = f"ADE20K_2021_17_01/images/ADE/{dirname}/urban/street"
        name = f"ADE_{split}_{k:08d}.jpg"
        _jpg(str(tmp_path / folder / name), 6, 8, k)
        values = np.zeros((6, 8), dtype=np.int64)
        values[:3] = 2978  # present everywhere
        values[3:, :4] = 5 if split == "train" else 0  # train only: dropped
        values[3:, 4:] = 300
        _save(str(tmp_path / folder / name.replace(".jpg", "_seg.png")), _full_seg(values))
        files.append(name)
        folders.append(folder)
    names = [f"class{i}" for i in range(3200)]
    base.mkdir(exist_ok=True)
    with open(base / "index_ade20k.pkl", "wb") as f:
        pickle.dump({"filename": files, "folder": folders, "objectnames": names}, f)
    assert script.main(["--root", str(tmp_path)]) == 0
    cats = json.loads((base / "ade20k_full_categories.json").read_text())
    expected = [(300, 0, "class299"), (2978, 1, "class2977")]
    assert [(c["id"], c["trainId"], c["name"]) for c in cats] == expected
    lab = np.asarray(Image.open(base / "annotations_detectron2/training/ADE_train_00000001.tif"))
    assert lab.dtype == np.uint16
    assert lab[0, 0] == 1 and lab[5, 7] == 0 and lab[5, 0] == 65535
    assert (base / "images_detectron2" / "validation" / "ADE_val_00000001.jpg").is_file()

    from dinat_m2f.data.datasets.ade20k_full import register_all_ade20k_full

    register_all_ade20k_full(str(tmp_path))
    try:
        meta = MetadataCatalog.get("ade20k_full_sem_seg_train")
        assert meta.stuff_classes == ["class299", "class2977"]
        dicts = DatasetCatalog.get("ade20k_full_sem_seg_train")
        assert len(dicts) == 2 and dicts[0]["sem_seg_file_name"].endswith(".tif")
    finally:
        register_all_ade20k_full(datasets_root())


def test_ade20k_full_index_is_read_as_plain_data_only(tmp_path):
    """index_ade20k.pkl goes through the project's safe loader: an index that would run code
    while loading (here: create a file) is refused and none of it runs."""
    from dinat_m2f.checkpoint import UnsafeCheckpointError
    from tests.checkpoint.test_safe_load import CreatesMarker

    script = load_script("prepare_ade20k_full_sem_seg")
    marker = tmp_path / "marker"
    index = tmp_path / "index_ade20k.pkl"
    with open(index, "wb") as f:
        pickle.dump({"filename": [], "folder": [], "objectnames": CreatesMarker(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"index_ade20k\.pkl: refused to load"):
        script.load_index(str(index))
    assert not marker.exists()
    with open(index, "wb") as f:  # the official index's kinds of values load
        pickle.dump(
            {
                "filename": ["a.jpg"],
                "folder": ["f"],
                "objectnames": ["wall"],
                "objectPresence": np.zeros((1, 1), np.uint8),
            },
            f,
        )
    assert script.load_index(str(index))["objectnames"] == ["wall"]


# --- Cityscapes ------------------------------------------------------------------------------
def test_cityscapes(tmp_path):
    script = load_script("prepare_cityscapes")
    with pytest.raises(SystemExit, match="cityscapes"):
        script.main(["--root", str(tmp_path)])
    cs = tmp_path / "cityscapes"
    stem = "aachen_000000_000019"
    gt = cs / "gtFine" / "train" / "aachen"
    gt.mkdir(parents=True)
    _jpg(str(cs / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png"), 8, 10)
    polygons = {
        "imgHeight": 8,
        "imgWidth": 10,
        "objects": [
            {"label": "road", "polygon": [[0, 4], [9, 4], [9, 7], [0, 7]]},
            {"label": "car", "polygon": [[2, 1], [5, 1], [5, 3], [2, 3]]},
        ],
    }
    (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons))
    inst = np.full((8, 10), 7, dtype=np.uint16)  # road (label id 7)
    inst[1:4, 2:6] = 26001  # car (26) instance 1
    inst[0] = 0
    _save(str(gt / f"{stem}_gtFine_instanceIds.png"), inst)
    assert script.main(["--root", str(tmp_path), "--splits", "train"]) == 0
    train_ids = np.asarray(Image.open(gt / f"{stem}_gtFine_labelTrainIds.png"))
    assert train_ids[5, 5] == 0 and train_ids[2, 3] == 13 and train_ids[0, 0] == 255

    from detectron2.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic

    meta = MetadataCatalog.get("cityscapes_fine_panoptic_train").as_dict()
    dicts = load_cityscapes_panoptic(
        str(cs / "leftImg8bit" / "train"),
        str(cs / "gtFine" / "cityscapes_panoptic_train"),
        str(cs / "gtFine" / "cityscapes_panoptic_train.json"),
        meta,
    )
    assert len(dicts) == 1
    assert sorted(s["category_id"] for s in dicts[0]["segments_info"]) == [0, 13]  # train ids


def test_coco_script_reproduces_builtin_semantic_pngs(shapes_root, tmp_path):
    """The COCO conversion script, run (in 2 processes) on the built-in dataset's panoptic
    annotations, writes exactly the generator's semantic PNGs."""
    from dinat_m2f.data.datasets.builtin_shapes import SHAPES_CATEGORIES, builtin_shapes_paths

    script = load_script("prepare_coco_semantic_annos_from_panoptic_annos")
    p = builtin_shapes_paths(shapes_root, "train")
    out = tmp_path / "semseg"
    n = script.convert_split(
        p["panoptic_json"], p["panoptic_root"], str(out), SHAPES_CATEGORIES, workers=2
    )
    assert n == len(os.listdir(p["sem_seg_root"])) > 0
    for name in os.listdir(p["sem_seg_root"]):
        a = np.asarray(Image.open(os.path.join(p["sem_seg_root"], name)))
        b = np.asarray(Image.open(out / name))
        assert np.array_equal(a, b), name
