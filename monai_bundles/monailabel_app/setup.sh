#!/usr/bin/env bash
# Install MONAI Label 0.8.5 for the few-shot app into .monailabel/ (a --target folder used only with
# PYTHONPATH=.monailabel; never a medmeta dependency). Run from the repository root after `make setup`:
#     bash monai_bundles/monailabel_app/setup.sh
# Why by hand: monailabel's own requirements pull CUDA torch and torchvision. So it is installed
# without dependencies, and then the packages it imports, pinned to versions that work together
# here: pydicom below 3 (for pydicom-seg), dicomweb-client 0.59 (the last for pydicom 2), fastapi
# 0.115 / starlette 0.41 (later fastapi needs opentelemetry). torch, MONAI, numpy, scipy,
# scikit-learn, pillow, httpx and pydantic come from medmeta's .venv. About 2 GB (ITK is most of it).
set -euo pipefail
.venv/bin/python -m pip install --quiet --no-deps --target .monailabel \
    monailabel==0.8.5 \
    uvicorn==0.54.0 fastapi==0.115.5 starlette==0.41.3 python-multipart==0.0.34 pydantic-settings==2.16.3 \
    python-dotenv==1.2.4 anyio==4.16.0 sniffio==1.3.1 h11==0.16.0 click==8.5.1 \
    schedule==1.2.2 timeloop==1.0.2 expiringdict==1.2.2 expiring-dict==1.1.2 cachetools==8.0.2 watchdog==7.1.0 \
    "pydicom==2.4.5" pydicom-seg==0.4.1 pynetdicom==3.0.4 pynrrd==1.1.3 dicomweb-client==0.59.1 retrying==1.4.2 \
    google-auth==2.63.0 pyasn1==0.6.5 pyasn1-modules==0.4.2 rsa==4.9.1 cryptography==50.0.2 cffi==2.1.1 \
    pycparser==3.12 girder-client==5.0.21 requests-toolbelt==1.0.0 diskcache==5.6.3 psutil==7.2.2 \
    einops==0.8.2 pyyaml==6.0.4 filelock==4.2.12 passlib==1.7.4 pyjwt==2.15.1 bcrypt==5.0.0 shapely==2.2.0 \
    nibabel==5.4.2 scikit-image==0.26.0 imageio==2.38.1 tifffile==2026.3.3 lazy-loader==0.6 networkx==3.6.1 \
    simpleitk==2.5.7 itk==5.4.4 itk-core==5.4.4 itk-numerics==5.4.4 itk-io==5.4.4 itk-filtering==5.4.4 \
    itk-registration==5.4.4 itk-segmentation==5.4.4
echo "MONAI Label installed in .monailabel"
