"""Our D2DiNAT against the official D2 DiNAT backbone (SHI-Labs/Neighborhood-Attention-Transformer,
mask2former/dinat.py, on NATTEN 0.14's NeighborhoodAttention2D with our ops underneath) on
images whose maps are smaller than kernel x dilation at some level (tools/compare_official_dinat.py
says how). The official files are not part of this project: the test runs when the environment
variables DINAT_M2F_OFFICIAL_DINAT (mask2former/dinat.py) and DINAT_M2F_NATTEN2D (NATTEN's
natten/natten2d.py) name them, and is skipped otherwise. CI covers the pad-attend-crop rule
without them: tests/layers/test_neighborhood_attention.py checks the module against the
brute-force oracle on such sizes."""

import os

import pytest

from tools.compare_official_dinat import TOLERANCE, compare

OFFICIAL = os.environ.get("DINAT_M2F_OFFICIAL_DINAT", "")
NATTEN2D = os.environ.get("DINAT_M2F_NATTEN2D", "")


@pytest.mark.skipif(
    not (os.path.isfile(OFFICIAL) and os.path.isfile(NATTEN2D)),
    reason="the official DiNAT code is not here: set DINAT_M2F_OFFICIAL_DINAT to "
    "Neighborhood-Attention-Transformer/mask2former/dinat.py and DINAT_M2F_NATTEN2D to "
    "NATTEN (0.14)'s src/natten/natten2d.py",
)
def test_equal_to_the_official_backbone_on_maps_smaller_than_kernel_times_dilation():
    rows = compare(OFFICIAL, NATTEN2D)
    assert len(rows) == 56
    worst = max(rows, key=lambda row: row[-1])
    assert worst[-1] <= TOLERANCE, worst
