"""demo/demo.py and its modules (demo/*.py) on a tiny randomly initialised model: images (a
corrupt one skipped and reported), video round trip through OpenCV, weight errors, camera and
video errors, the drawing modes and the metadata used to name classes."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from .conftest import CONFIG, DEMO_SCRIPT, TINY_OPTS


def _write_video(path, frames=12, height=64, width=80, fourcc="mp4v", fps=10.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = np.full((height, width, 3), 40 + 15 * i, dtype=np.uint8)
        cv2.circle(frame, (10 + 5 * i, height // 2), 12, (0, 0, 255), -1)
        frame = np.clip(frame + rng.integers(0, 20, frame.shape), 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()


def _read_video(path) -> tuple[int, tuple[int, int] | None, float]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count += 1
        size = frame.shape[:2]
    capture.release()
    return count, size, fps


@pytest.fixture
def image_folder(tmp_path, val_images):
    """Three 64x64 JPEGs of the built-in set, one 80x48 PNG and a corrupt JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    for path in val_images:
        (folder / path.name).write_bytes(path.read_bytes())
    png = cv2.resize(cv2.imread(str(val_images[0])), (80, 48))
    cv2.imwrite(str(folder / "wide.png"), png)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "notes.txt").write_text("not an image; ignored")
    return folder


def test_folder_with_a_corrupt_image_from_another_directory(
    tmp_path, image_folder, weights, datasets_env
):
    """As a script started outside the repository: the good images are drawn at their size
    and format, the corrupt one is named on stderr and skipped, exit status 1."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(DEMO_SCRIPT), "--config-file", str(CONFIG), "--no-progress",
           "--input", str(image_folder), "--output", str(out),
           "--opts", *TINY_OPTS, "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=datasets_env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "broken.jpg" in result.stderr
    assert "1 of 5 input image(s) skipped" in result.stderr
    written = sorted(p.name for p in out.iterdir())
    expected = sorted(p.name for p in image_folder.iterdir() if p.suffix in (".jpg", ".png"))
    expected.remove("broken.jpg")
    assert written == expected
    for name in written:
        source, drawing = cv2.imread(str(image_folder / name)), cv2.imread(str(out / name))
        assert drawing is not None and drawing.shape == source.shape, name
    assert "panoptic:" in result.stdout  # the summary line of each image


def test_video_round_trip(demo, demo_args, tmp_path, capsys):
    """12 frames of 64x80 in, 12 frames of 64x80 out (default name in a folder), readable by
    OpenCV, at the source's frame rate; an .avi file name works too."""
    video = tmp_path / "clip.mp4"
    _write_video(video)
    assert demo.main(demo_args("--video-input", str(video), "--output", str(tmp_path / "out"))) == 0
    frames, size, fps = _read_video(tmp_path / "out" / "clip.mp4")
    assert (frames, size) == (12, (64, 80))
    assert fps == pytest.approx(10.0, abs=0.1)
    assert "12 frames" in capsys.readouterr().out

    avi = tmp_path / "drawn.avi"
    argv = demo_args("--video-input", str(video), "--output", str(avi), "--max-frames", "5")
    assert demo.main(argv) == 0
    assert _read_video(avi)[:2] == (5, (64, 80))


def test_missing_weights_is_an_error_before_processing(
    demo, demo_args, tmp_path, val_images, capsys
):
    missing = tmp_path / "nowhere" / "model_final.pth"
    out = tmp_path / "out"
    argv = demo_args("--input", str(val_images[0]), "--output", str(out), weights_path=missing)
    assert demo.main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert not out.exists()


def test_checkpoint_of_another_config_is_an_error(
    demo, demo_args, tmp_path, val_images, weights_other_classes, capsys
):
    out = tmp_path / "out"
    args = ("--input", str(val_images[0]), "--output", str(out))
    assert demo.main(demo_args(*args, weights_path=weights_other_classes)) == 2
    err = capsys.readouterr().err
    assert "sem_seg_head.predictor.class_embed.weight: (6, 32) vs (9, 32)" in err
    assert "--allow-partial-weights" in err
    assert not out.exists()

    argv = demo_args("--allow-partial-weights", *args, weights_path=weights_other_classes)
    assert demo.main(argv) == 0
    assert (out / val_images[0].name).is_file()


def test_empty_weights_and_unreadable_checkpoint(demo, demo_args, tmp_path, val_images, capsys):
    assert demo.main(demo_args("--input", str(val_images[0]), weights_path="")) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert demo.main(demo_args("--input", str(val_images[0]), weights_path=junk)) == 2
    assert f"cannot load MODEL.WEIGHTS {junk}" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_weights_that_would_run_code_are_refused(
    demo, demo_args, tmp_path, val_images, capsys, suffix
):
    """The demo loads MODEL.WEIGHTS through dinat_m2f/checkpoint/model_weights.py, i.e. the
    safe loader: a checkpoint that would create a file while loading is refused, exit 2."""
    from tests.checkpoint.test_safe_load import write_hostile_checkpoint

    marker = tmp_path / "marker"
    evil = write_hostile_checkpoint(tmp_path, suffix, marker)
    out = tmp_path / "out"
    argv = demo_args("--input", str(val_images[0]), "--output", str(out), weights_path=evil)
    assert demo.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{evil}: refused to load" in err and "plain data only" in err
    assert not marker.exists() and not out.exists()


def test_webcam_without_a_camera(demo, demo_args, capsys):
    camera = cv2.VideoCapture(0)
    has_camera = camera.isOpened()
    camera.release()
    if has_camera:
        pytest.skip("this machine has a camera")
    assert demo.main(demo_args("--webcam")) == 2
    assert "cannot open camera 0" in capsys.readouterr().err


def test_unreadable_or_missing_video(demo, demo_args, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert demo.main(demo_args("--video-input", str(bad))) == 2
    assert f"--video-input {bad}" in capsys.readouterr().err
    assert demo.main(demo_args("--video-input", str(tmp_path / "none.mp4"))) == 2
    assert "none.mp4: no such file" in capsys.readouterr().err


def test_argument_errors(demo, demo_args, tmp_path, val_images, capsys):
    a_file = tmp_path / "a_file.png"
    a_file.write_bytes(b"")
    two = [str(p) for p in val_images[:2]]
    assert demo.main(demo_args("--input", *two, "--output", str(a_file))) == 2
    assert "need a folder" in capsys.readouterr().err
    folder = str(val_images[0].parent)
    assert demo.main(demo_args("--input", folder, "--output", str(tmp_path / "new.png"))) == 2
    assert "from a folder or pattern need a folder" in capsys.readouterr().err
    assert demo.main(demo_args("--input", str(tmp_path / "*.jpg"))) == 2
    assert "no file matches" in capsys.readouterr().err
    video = tmp_path / "v.mp4"
    _write_video(video, frames=2)
    bad_output = str(tmp_path / "o.xyz")
    assert demo.main(demo_args("--video-input", str(video), "--output", bad_output)) == 2
    assert "unknown video extension '.xyz'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert demo.main(demo_args("--parallel", "--input", two[0])) == 2
        assert "--parallel" in capsys.readouterr().err


def test_single_image_to_a_file_and_summary_without_output(
    demo, demo_args, tmp_path, val_images, capsys
):
    target = tmp_path / "sub" / "drawn.png"
    assert demo.main(demo_args("--input", str(val_images[0]), "--output", str(target))) == 0
    assert cv2.imread(str(target)).shape == (64, 64, 3)
    capsys.readouterr()
    pattern = str(val_images[0].parent / "*.jpg")
    assert demo.main(demo_args("--input", pattern, "--show", "semantic")) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "semantic:" in line]
    assert len(lines) == len(val_images)
    assert all(" classes (" in line and "s, semantic" in line for line in lines)


def test_show_modes(demo, val_images):
    from detectron2.utils.visualizer import VisImage

    from dinat_m2f.engine.setup import load_cfg

    visualization = sys.modules["visualization"]
    image = cv2.imread(str(val_images[0]))
    cfg = load_cfg(str(CONFIG), TINY_OPTS + ["MODEL.WEIGHTS", ""])
    cfg.freeze()
    modes = (("auto", "panoptic"), ("instance", "instance"), ("semantic", "semantic"))
    for show, expected in modes:
        vis_demo = visualization.VisualizationDemo(
            cfg, show=show, confidence_threshold=0.0, allow_partial_weights=True
        )
        predictions, vis = vis_demo.run_on_image(image)
        assert set(predictions) == {"panoptic_seg", "instances", "sem_seg"}
        assert vis_demo.mode_of(predictions) == expected
        assert vis_demo.describe(predictions).startswith(expected + ":")
        assert isinstance(vis, VisImage) and vis.get_image().shape == image.shape
    no_instances = load_cfg(
        str(CONFIG), TINY_OPTS + ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]
    )
    with pytest.raises(ValueError, match="INSTANCE_ON"):
        visualization.VisualizationDemo(no_instances, show="instance", allow_partial_weights=True)
    predictions = {"sem_seg": torch.zeros(8, 4, 4)}
    assert visualization.choose_mode(predictions, "auto") == "semantic"
    with pytest.raises(ValueError, match="PANOPTIC_ON True"):
        visualization.choose_mode(predictions, "panoptic")


def test_metadata_names_things_by_their_contiguous_ids(demo):
    """Things that are not the first contiguous ids (ADE20K, Cityscapes) take their names from
    stuff_classes; without a dataset the classes get made-up names."""
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog

    visualization = sys.modules["visualization"]
    name = "demo_test_things_not_first"
    if name not in MetadataCatalog.list():
        MetadataCatalog.get(name).set(
            thing_classes=["car"],
            stuff_classes=["road", "car"],
            stuff_colors=[[1, 1, 1], [2, 2, 2]],
            thing_dataset_id_to_contiguous_id={7: 1},
        )
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.DATASETS.TEST = (name,)
    meta = visualization.demo_metadata(cfg)
    assert meta.thing_classes == ["road", "car"] and meta.thing_colors == [[1, 1, 1], [2, 2, 2]]
    cfg.DATASETS.TEST = ()
    cfg.DATASETS.TRAIN = ()
    meta = visualization.demo_metadata(cfg)
    assert meta.stuff_classes == ["class 0", "class 1"] == meta.thing_classes


@pytest.mark.cuda
def test_parallel_matches_the_single_process_demo(demo, demo_args, tmp_path, val_images):
    """--parallel (one worker per GPU) draws the same pictures as the in-process demo."""
    gpu_opts = ("MODEL.DEVICE", "cuda")
    out_sync, out_async = tmp_path / "sync", tmp_path / "async"
    folder = str(val_images[0].parent)
    assert demo.main(demo_args("--input", folder, "--output", str(out_sync), opts=gpu_opts)) == 0
    argv = demo_args("--parallel", "--input", folder, "--output", str(out_async), opts=gpu_opts)
    assert demo.main(argv) == 0
    for path in val_images:
        a, b = cv2.imread(str(out_sync / path.name)), cv2.imread(str(out_async / path.name))
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0, path.name


def test_async_results_come_back_in_order(demo):
    """AsyncPredictor.get() returns results in the order the images were put, whichever
    worker answers first (the queues stand in for the GPU workers)."""
    import queue

    module = sys.modules["async_predictor"]
    async_predictor = object.__new__(module.AsyncPredictor)
    async_predictor.procs, async_predictor.result_rank, async_predictor.result_data = [], [], []
    async_predictor.put_idx = async_predictor.get_idx = 0
    async_predictor.task_queue, async_predictor.result_queue = queue.Queue(), queue.Queue()
    for _ in range(4):
        async_predictor.put(np.zeros((2, 2, 3), np.uint8))
    assert len(async_predictor) == 4
    for idx in (3, 1, 4, 2):
        async_predictor.result_queue.put((idx, {"index": idx}))
    assert [async_predictor.get()["index"] for _ in range(4)] == [1, 2, 3, 4]
    async_predictor.result_queue.put((5, module._WorkerFailure("cuda:0: boom")))
    async_predictor.put(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(RuntimeError, match="boom"):
        async_predictor.get()
