"""Start MONAI Label with the few-shot app: ``python monai_bundles/monailabel_app/serve.py --studies DIR [--port N]``.

Run with the MONAI Label packages on the path (``PYTHONPATH=.monailabel``, see README.md).
MONAI Label imports torchvision at import time, which has no CPU build here, so placeholders
stand in for it (nothing used here needs it); bundles are loaded from the local folder
(``BUNDLE_DOWNLOAD_SRC=github`` keeps MONAI from trying to reach a model zoo).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medmeta.compat import torchvision_placeholder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    torchvision_placeholder()
    os.environ.setdefault("BUNDLE_DOWNLOAD_SRC", "github")
    from monailabel.main import Main

    sys.argv = ["monailabel", "start_server", "--app", str(Path(__file__).resolve().parent), "--studies",
                args.studies, "--host", args.host, "--port", str(args.port)]
    Main().run()


if __name__ == "__main__":
    main()
