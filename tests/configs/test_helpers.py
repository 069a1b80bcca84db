"""The config tests' helpers (helpers.py) do what the tests rely on: `load_config` sets the
given defaults before the file merges (so a file that depends on a default is seen), and the
two comparisons tell values apart as their docstring says."""

from .helpers import CONFIG_ROOT, load_config, mismatches, same_default, same_value

BASE = CONFIG_ROOT / "Base-Mask2Former.yaml"  # sets MODEL.DINAT.EMBED_DIM, not QK_SCALE


def test_defaults_apply_before_the_file():
    plain = load_config(BASE)
    changed = load_config(
        BASE, defaults=(("MODEL.DINAT.QK_SCALE", 0.5), ("MODEL.DINAT.EMBED_DIM", 192))
    )
    assert plain.MODEL.DINAT.QK_SCALE is None and changed.MODEL.DINAT.QK_SCALE == 0.5
    assert plain.MODEL.DINAT.EMBED_DIM == changed.MODEL.DINAT.EMBED_DIM == 64  # the file's
    assert load_config(BASE, ["SOLVER.BASE_LR", "0.5"]).SOLVER.BASE_LR == 0.5


def test_same_value_equates_spellings_of_a_number_only():
    assert same_value(0.1111111111111111, 1.0 / 9.0) and same_value(10, 10.0)
    assert same_value([[1, 2], [3]], ((1, 2), (3,)))
    assert not same_value(1.0001e-4, 1e-4) and not same_value(True, 1.0)
    assert not same_value([1, 2], [1, 2, 3]) and not same_value("1", 1)


def test_same_default_also_needs_the_type():
    assert same_default([6, 12, 18], (6, 12, 18)) and same_default(0.3, 0.3)
    assert not same_default(2, 2.0) and not same_default(None, 0.0)


def test_mismatches_name_the_key_and_both_values():
    cfg = load_config(BASE)
    assert mismatches(cfg, {"MODEL.DINAT.EMBED_DIM": 64}) == []
    assert mismatches(cfg, {"MODEL.DINAT.EMBED_DIM": 96}) == [
        "MODEL.DINAT.EMBED_DIM = 64, expected 96"
    ]
