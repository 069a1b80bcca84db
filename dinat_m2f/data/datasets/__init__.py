"""Dataset registrations; importing this package registers every dataset below (lazily).

Root: `$DETECTRON2_DATASETS` (default `./datasets`), read at import. Names:

- COCO (coco.py): `coco_2017_{train,val}_panoptic_with_sem_seg`, its alias
  `coco_2017_{train,val}_panoptic`, and detectron2's `coco_2017_{train,val}` (instances);
- ADE20K (ade20k.py): detectron2's `ade20k_sem_seg_{train,val}`,
  `ade20k_panoptic_{train,val}`, `ade20k_instance_{train,val}`;
- ADE20K-Full (ade20k_full.py): `ade20k_full_sem_seg_{train,val}`;
- Cityscapes (cityscapes.py): detectron2's `cityscapes_fine_sem_seg_{train,val}`,
  `cityscapes_fine_instance_seg_{train,val}`, `cityscapes_fine_panoptic_{train,val}`;
- Mapillary Vistas (mapillary_vistas.py): `mapillary_vistas_sem_seg_{train,val}`,
  `mapillary_vistas_panoptic_{train,val}`;
- built-in synthetic (builtin_shapes.py): `builtin_shapes_{train,val}_panoptic_with_sem_seg`
  (alias `builtin_shapes_{train,val}_panoptic`), `builtin_shapes_{train,val}_instance`,
  `builtin_shapes_{train,val}_sem_seg`.

Loading a dataset whose files are missing raises `DatasetNotFoundError` naming the path and the
expected layout (datasets/README.md has the download and preparation steps).
"""

import detectron2.data.datasets  # noqa: F401  (detectron2's builtin names first)

from . import ade20k, ade20k_full, builtin_shapes, cityscapes, coco, mapillary_vistas
from .errors import DatasetFormatError, DatasetNotFoundError
from .layout import datasets_root

__all__ = ["DatasetFormatError", "DatasetNotFoundError", "datasets_root", "register_all"]


def register_all(root: str) -> None:
    """Registers (or re-registers) every dataset with `root` as the datasets root."""
    coco.register_all_coco(root)
    ade20k.register_all_ade20k(root)
    ade20k_full.register_all_ade20k_full(root)
    cityscapes.register_all_cityscapes(root)
    mapillary_vistas.register_all_mapillary_vistas(root)
    builtin_shapes.register_builtin_shapes(root)


register_all(datasets_root())
