"""A MONAI Label app that serves medmeta's few-shot bundles as classification models.

``/info/`` lists every ``monai_bundles/*_classification`` bundle that has weights; ``/infer/<bundle>``
returns its per-class scores (softmax probabilities) for a study (PNG, JPEG or DICOM). Start it
with ``serve.py`` (see README.md), which makes the third-party imports work here first.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai.transforms import SaveImaged
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.bundle import BundleInferTask

import medmeta

logger = logging.getLogger(__name__)
BUNDLES = Path(__file__).resolve().parents[1]
EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.dcm"]


class FewShotApp(MONAILabelApp):
    """The few-shot bundles, each as a classifier over the classes of its remembered support set."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles = {p.name: p for p in sorted(BUNDLES.glob("*_classification"))
                        if (p / "models" / "model.pt").is_file()}
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medmeta few-shot classification",
                         description="Few-shot classifiers (Prototypical, Matching) as MONAI bundles. "
                         + medmeta.DISCLAIMER, version=medmeta.__version__)

    def init_datastore(self) -> LocalDatastore:
        return LocalDatastore(self.studies, extensions=EXTENSIONS, auto_reload=True)

    def init_infers(self) -> dict[str, BundleInferTask]:
        infers = {}
        for name, path in self.bundles.items():
            # class scores, not masks: no restoring to the image's geometry and no image writer
            task = BundleInferTask(str(path), self.conf, type="classification", add_post_restore=False,
                                   post_filter=[SaveImaged])
            if task.is_valid():
                infers[name] = task
            else:
                logger.warning("bundle %s could not be loaded; it is not served", name)
        return infers
