"""medmeta: meta-learning for clinical data.

Few-shot diagnosis from images (MONAI bundles) and personalised treatment from
records (FHIR). The package maps the repository's folders into one namespace:
``plugin/`` is ``medmeta``, ``fhir_adapters/`` is ``medmeta.fhir`` and
``dashboard/`` is ``medmeta.dashboard``.

All outputs are decision support for clinicians, never orders.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medmeta")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

DISCLAIMER = "Decision support only; not for clinical use without review by a qualified clinician."
