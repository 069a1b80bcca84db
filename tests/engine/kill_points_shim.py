"""Runs train_net.py with test-only hooks that report the run's progress, so that a test can land
a `kill -9` at a point of the run it chooses from that progress (tests/engine/test_kill_resume.py):

    python kill_points_shim.py EVENTS_FILE PAUSE_AT -- <train_net.py arguments>

Events are appended to EVENTS_FILE (flushed and fsync'ed) as lines "KIND NAME<TAB>TIME", TIME
being time.time() when it happened:

- "step N": training iteration N (0-based) starts;
- "writing NAME": the first half of a checkpoint-file write (`atomic_write`: a checkpoint, or the
  `last_checkpoint` pointer) is in its `.partial` temporary file, on disk;
- "written NAME": that file is complete under its final name;
- "evaluated image I at iteration N": the evaluation run at iteration N (the trainer's; the
  final evaluation is at MAX_ITER) has processed its I-th image.

NAME is the file's name, for the pointer "last_checkpoint=<the name it points to>". When
"KIND NAME" equals PAUSE_AT, the process sleeps there (for the test to kill it). Nothing here is
part of the project: production code has no hook for it.
"""

import io
import itertools
import os
import runpy
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    events_file, pause_at = sys.argv[1], sys.argv[2]
    assert sys.argv[3] == "--", sys.argv
    train_net_args = sys.argv[4:]

    import detectron2.engine.defaults as defaults
    from detectron2.utils.events import get_event_storage

    import dinat_m2f.checkpoint.atomic_files as atomic_files
    from dinat_m2f.engine.trainer import Trainer

    def event(kind: str, name: str) -> None:
        line = f"{kind} {name}"
        with open(events_file, "a") as f:
            f.write(f"{line}\t{time.time():.3f}\n")
            f.flush()
            os.fsync(f.fileno())
        if line == pause_at:
            time.sleep(3600)

    real_atomic_write = atomic_files.atomic_write

    def atomic_write(path, write):
        buffer = io.BytesIO()
        write(buffer)
        data = buffer.getvalue()
        name = os.path.basename(path)
        if name == atomic_files.POINTER:
            name = f"{name}={data.decode()}"
        half = len(data) // 2

        def write_in_halves(f):
            f.write(data[:half])
            f.flush()
            os.fsync(f.fileno())
            event("writing", name)
            f.write(data[half:])

        real_atomic_write(path, write_in_halves)
        event("written", name)

    real_run_step = Trainer.run_step

    def run_step(self):
        event("step", str(self.iter))
        real_run_step(self)

    real_inference_on_dataset = defaults.inference_on_dataset

    def inference_on_dataset(model, data_loader, evaluator):
        iteration = get_event_storage().iter
        images = itertools.count(1)
        real_process = evaluator.process

        def process(inputs, outputs):
            real_process(inputs, outputs)
            for _ in inputs:
                event("evaluated", f"image {next(images)} at iteration {iteration}")

        evaluator.process = process
        return real_inference_on_dataset(model, data_loader, evaluator)

    atomic_files.atomic_write = atomic_write
    Trainer.run_step = run_step
    defaults.inference_on_dataset = inference_on_dataset
    sys.argv = [os.path.join(REPO, "train_net.py"), *train_net_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
