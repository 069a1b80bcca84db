"""Capturing what one logger emits, whatever its `propagate` (detectron2's setup_logger turns
propagation off, which hides records from pytest's caplog)."""

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def captured_log(name: str, level: int = logging.INFO) -> Iterator[list[str]]:
    """Collects the messages of logger `name` (and its children) at `level` and above."""
    messages: list[str] = []
    handler = logging.Handler(level)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
