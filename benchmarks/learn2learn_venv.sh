#!/usr/bin/env bash
# A side venv with learn2learn 0.2.0 for benchmarks/maml_speed.py, kept out of the project's .venv.
# It reuses the project's .venv packages (torch 2.13.0, numpy, medmeta) through a .pth file, and builds
# learn2learn from its sdist the way shared/notes/peers.md describes (its C files need re-cythonizing on 3.11).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$REPO/.venv-learn2learn}"
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install --quiet cython setuptools wheel
SITE="$("$REPO/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$SITE')" > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/medmeta-venv.pth"
BUILD="$(mktemp -d)"
"$VENV/bin/pip" download --quiet --no-deps --no-binary :all: learn2learn==0.2.0 -d "$BUILD"
tar -xzf "$BUILD"/learn2learn-0.2.0.tar.gz -C "$BUILD"
(cd "$BUILD/learn2learn-0.2.0" && "$VENV/bin/cythonize" -3 -i learn2learn/data/*.pyx >/dev/null \
  && "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation .)
"$VENV/bin/pip" install --quiet --no-deps gym==0.26.2 gym-notices requests tqdm
"$VENV/bin/python" -c "import learn2learn; print('learn2learn', learn2learn.__version__)"
