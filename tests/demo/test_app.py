"""demo/app.py end to end: the app started as a user starts it (its own process, on 127.0.0.1)
with the tiny random model of conftest, driven by a real Chromium (Debian's package, via
Playwright) as a user drives it: upload a held-out built-in image, run each task, read the
drawing (its pixels, decoded by the browser into a canvas) and the segment list from the page,
and compare them with demo/visualization.py's VisualizationDemo on the same file. Plus refusals:
a broken and a truncated upload, an image over the pixel limit, an upload over the size limit
(refused by Gradio in the page), a model that is not trained yet; and a short video whose
drawing the browser can play.

The tiny model has random weights; panoptic thresholds 0 make it output segments to draw.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from .conftest import CONFIG, REPO_ROOT, TINY_OPTS, load_demo_module

APP_SCRIPT = REPO_ROOT / "demo" / "app.py"
CHROMIUM = "/usr/bin/chromium"
# what the environment notes ask for on these machines (no network, no GPU, root)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APP_OPTS = TINY_OPTS + [
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip
CONFIDENCE = 0.0  # every instance of the random model is drawn and listed
MAX_UPLOAD_MB = 1.0
MAX_MEGAPIXELS = 0.05  # 50,000 pixels: the 64x64 test images pass, a 300x300 one does not
MAX_VIDEO_FRAMES = 4
STARTUP_SECONDS = 240  # importing torch, detectron2 and gradio on a loaded 2-core machine
RUN_TIMEOUT_MS = 120_000

# the decoded pixels of an <img>, as the browser holds them: [width, height, RGBA bytes]
READ_PIXELS_JS = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    return [canvas.width, canvas.height,
            Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, weights, val_images):
    """The app in its own process, offering the tiny model and the built-in model whose
    weights do not exist; its URL."""
    folder = tmp_path_factory.mktemp("app")
    port = _free_port()
    untrained = folder / "not_trained" / "model_final.pth"
    cmd = [
        sys.executable, str(APP_SCRIPT), "--host", "127.0.0.1", "--port", str(port),
        "--model", str(CONFIG), str(weights), "--model", str(CONFIG), str(untrained),
        "--device", "cpu", "--examples", str(val_images[0].parent),
        "--confidence-threshold", str(CONFIDENCE), "--max-upload-mb", str(MAX_UPLOAD_MB),
        "--max-megapixels", str(MAX_MEGAPIXELS), "--max-video-frames", str(MAX_VIDEO_FRAMES),
        "--opts", *APP_OPTS,
    ]  # fmt: skip
    env = dict(os.environ, GRADIO_TEMP_DIR=str(folder / "gradio"))
    log = open(folder / "app.log", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited ({proc.returncode}):\n{_tail(folder / 'app.log')}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the app did not answer in {STARTUP_SECONDS}s:\n{_tail(folder / 'app.log')}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert "Traceback" not in (folder / "app.log").read_text(), _tail(folder / "app.log")


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text()[-chars:]


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `make setup` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#run-image").wait_for()
    yield page
    page.close()


def _upload_image(page, path: Path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))


def _run_image(page, task: str) -> str:
    """Choose the task, press Run, wait for the answer in the status line; returns it."""
    status = page.locator("#image-status")
    before = status.inner_text().strip()
    page.get_by_label(task, exact=True).check()
    page.locator("#run-image").click()
    # while the request runs the line shows Gradio's timer ("0.2s"); the answer starts with
    # the task, "Refused:" or "Error:"
    page.wait_for_function(
        """([before, task]) => {
            const s = document.querySelector('#image-status');
            const text = s ? s.innerText.trim() : '';
            return text !== before && [task + ':', 'Refused:', 'Error:'].some(
                p => text.startsWith(p));
        }""",
        arg=[before, task],
    )
    return status.inner_text().strip()


def _drawing_in_page(page) -> np.ndarray:
    """The prediction image as the browser decoded it: (H, W, 3) uint8 RGB."""
    page.wait_for_function(
        "() => { const i = document.querySelector('#output-image img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    width, height, data = page.locator("#output-image img").evaluate(READ_PIXELS_JS)
    rgba = np.array(data, dtype=np.uint8).reshape(height, width, 4)
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


def _segment_rows_in_page(page) -> list[list[str]]:
    return [row.split("\t") for row in page.locator("#segments tbody tr").all_inner_texts() if row]


def _reference(image_path: Path, weights: Path, task: str):
    """VisualizationDemo (demo/visualization.py) on the file: predictions and the drawing under
    numpy seed 0, as the app draws (detectron2's Visualizer jitters colours with np.random)."""
    load_demo_module()  # puts demo/ on sys.path
    from detectron2.data.detection_utils import read_image
    from visualization import VisualizationDemo

    from dinat_m2f.engine.setup import load_cfg

    cfg = load_cfg(str(CONFIG), APP_OPTS + ["MODEL.WEIGHTS", str(weights)])
    demo = VisualizationDemo(cfg, show=task, confidence_threshold=CONFIDENCE)
    state = np.random.get_state()
    np.random.seed(0)
    try:
        predictions, vis = demo.run_on_image(read_image(str(image_path), format="BGR"))
    finally:
        np.random.set_state(state)
    return predictions, vis.get_image(), demo.metadata


def _expected_rows(predictions, task: str, metadata) -> list[list[str]]:
    """The segment list from the predictions, counted here: number (the panoptic segment id),
    class, score, pixel area."""
    if task == "panoptic":
        seg, infos = predictions["panoptic_seg"]
        return [
            [
                str(s["id"]),
                metadata.stuff_classes[s["category_id"]],
                "-",
                str(int((seg == s["id"]).sum())),
            ]
            for s in infos
        ]
    if task == "instance":
        inst = predictions["instances"]
        inst = inst[inst.scores >= CONFIDENCE]
        return [
            [str(i + 1), metadata.thing_classes[int(c)], f"{float(s):.3f}", str(int(m.sum()))]
            for i, (c, s, m) in enumerate(zip(inst.pred_classes, inst.scores, inst.pred_masks))
        ]
    labels = predictions["sem_seg"].argmax(0).flatten().tolist()
    return [
        [str(i + 1), metadata.stuff_classes[c], "-", str(labels.count(c))]
        for i, c in enumerate(sorted(set(labels)))
    ]


def test_each_task_draws_what_the_predictor_draws(page, val_images, weights):
    """A held-out built-in image uploaded in Chromium: for each task the drawing equals
    VisualizationDemo's pixel for pixel (PNG on the page, same seed), and the segment list
    names the same classes, scores and areas."""
    image_path = val_images[0]  # 3 panoptic segments, 32 instances with the random model
    _upload_image(page, image_path)
    for task in ("panoptic", "instance", "semantic"):
        status = _run_image(page, task)
        predictions, expected, metadata = _reference(image_path, weights, task)
        rows = _segment_rows_in_page(page)
        assert status.startswith(f"{task}: {len(rows)} segments; inference "), status
        assert "ms on cpu (64x64 image" in status
        drawn = _drawing_in_page(page)
        assert drawn.shape == expected.shape == (64, 64, 3)
        differing = int((drawn != expected).any(-1).sum())
        assert differing == 0, f"{task}: {differing} of 4096 pixels differ from the predictor's"
        assert len(rows) > 0, task
        assert [r[:4] for r in rows] == _expected_rows(predictions, task, metadata)


def test_broken_and_refused_uploads_get_a_message(page, tmp_path, val_images):
    """Not an image, a truncated JPEG, too many pixels: a message in the status line, no
    drawing and no stack trace. A file over --max-upload-mb is refused by Gradio in the page."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    truncated = tmp_path / "truncated.jpg"
    data = val_images[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), np.zeros((300, 300, 3), np.uint8))
    cases = {
        broken: "Refused: the upload is not an image this app can read",
        truncated: "Refused: the image cannot be decoded; the file is damaged",
        large: "Refused: the image is 300x300 (0.1 megapixels); this app takes at most 0.05",
    }
    for path, message in cases.items():
        page.reload()
        _upload_image(page, path)
        status = _run_image(page, "panoptic")
        assert status.startswith(message), (path.name, status)
        assert page.locator("#output-image img").count() == 0
        assert "Traceback" not in page.locator("body").inner_text()

    oversized = tmp_path / "oversized.png"
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    cv2.imwrite(str(oversized), noise)  # about 1.9 MB: incompressible
    assert oversized.stat().st_size > MAX_UPLOAD_MB * 2**20
    page.reload()
    _upload_image(page, oversized)
    page.get_by_text("exceed the maximum allowed size").wait_for()
    assert page.locator("#input-image img").count() == 0


def test_untrained_builtin_model_says_how_to_train_it(page, val_images):
    page.locator("#model input").click()
    page.get_by_role("option", name="model_final.pth").click()
    _upload_image(page, val_images[0])
    status = _run_image(page, "semantic")
    assert status.startswith("Refused: The built-in model is not trained yet:"), status
    assert "not_trained/model_final.pth does not exist. Run make demo" in status


def test_short_video_is_drawn_and_playable(page, tmp_path):
    """A 6-frame clip: the first --max-video-frames (4) frames are drawn, the cut is said,
    and Chromium can play the WebM the app returns."""
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (80, 64))
    for i in range(6):
        frame = np.full((64, 80, 3), 60 + 20 * i, np.uint8)
        cv2.circle(frame, (12 + 8 * i, 32), 10, (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    page.get_by_role("tab", name="Video").click()
    page.locator("#input-video input[type=file]").set_input_files(str(clip))
    page.get_by_label("semantic", exact=True).check()
    page.locator("#run-video").click()
    status = page.locator("#video-status", has_text="frames")
    status.wait_for()
    assert status.inner_text().startswith(
        f"semantic: {MAX_VIDEO_FRAMES} frames (cut at --max-video-frames {MAX_VIDEO_FRAMES})"
    )
    video = page.locator("#output-video video")
    video.wait_for()
    page.wait_for_function(
        "() => { const v = document.querySelector('#output-video video');"
        " return v && v.readyState >= 1 && v.duration > 0; }"
    )
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [80, 64]
    assert video.evaluate("v => v.error") is None


# --- in-process: the handlers and the command line, without a browser ------------------------
def _load_app():
    import importlib.util

    name = "dinat_m2f_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, APP_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_task_the_model_does_not_output_is_refused(weights, val_images):
    app = _load_app()
    opts = APP_OPTS + ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]
    store = app.ModelStore([app.ModelSpec("tiny", str(CONFIG), str(weights))], "cpu", opts, 0.5)
    handlers = app.DemoApp(store, app.Limits())
    drawing, segments, status = handlers.predict_image(str(val_images[0]), "instance", "tiny")
    assert drawing is None and segments == ""
    assert status == (
        "**Refused:** this model does not output instance segmentation (it outputs panoptic, "
        "semantic); for a Mask2Former config, start the app with --opts "
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON True"
    )
    assert handlers.predict_image(None, "panoptic", "tiny")[2] == (
        "**Refused:** upload an image or pick an example first"
    )
    assert (
        "unknown model 'other'"
        in handlers.predict_image(str(val_images[0]), "panoptic", "other")[2]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "missing.yaml", "w.pth"], "--model missing.yaml w.pth: no such config file"),
        (["--confidence-threshold", "2"], "--confidence-threshold 2.0: use 0..1"),
        (["--max-video-frames", "0"], "--max-video-frames 0: must be positive"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--port", "70000"],
         "no CUDA device is available" if not torch.cuda.is_available() else "--port 70000"),
    ],
)  # fmt: skip
def test_bad_command_line_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load_app().main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_config_that_cannot_be_read_stops_before_serving(tmp_path, capsys):
    hostile = tmp_path / "hostile.yaml"
    marker = tmp_path / "marker"
    hostile.write_text(f"MODEL: !!python/object/apply:os.system ['touch {marker}']\n")
    assert _load_app().main(["--model", str(hostile), "w.pth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"app: error: --model {hostile} with --opts []: ConfigFileError:"), err
    assert not marker.exists()
