"""Runs train_net.py with a test-only shim around every checkpoint-file write, so that a test
can land a `kill -9` at an exact point of a write (tests/engine/test_kill_resume.py).

    python checkpoint_write_shim.py EVENTS_FILE PAUSE_AT -- <train_net.py arguments>

Each write of `atomic_write` (a checkpoint, or the `last_checkpoint` pointer) is made in two
halves; events are appended to EVENTS_FILE (flushed and fsync'ed) as lines "KIND NAME":

- "writing NAME": the first half of the file is in its `.partial` temporary file, on disk;
- "written NAME": the file is complete under its final name.

NAME is the file's name, for the pointer "last_checkpoint=<the name it points to>". When
"KIND NAME" equals PAUSE_AT, the process sleeps there (for the test to kill it). Nothing here
is part of the project: production code has no hook for it.
"""

import io
import os
import runpy
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    events_file, pause_at = sys.argv[1], sys.argv[2]
    assert sys.argv[3] == "--", sys.argv
    train_net_args = sys.argv[4:]

    import dinat_m2f.checkpoint.atomic_files as atomic_files

    real_atomic_write = atomic_files.atomic_write

    def event(kind: str, name: str) -> None:
        line = f"{kind} {name}"
        with open(events_file, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        if line == pause_at:
            time.sleep(3600)

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

    atomic_files.atomic_write = atomic_write
    sys.argv = [os.path.join(REPO, "train_net.py"), *train_net_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
