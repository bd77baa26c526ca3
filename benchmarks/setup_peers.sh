#!/usr/bin/env bash
# Install the peer libraries (learn2learn 0.2.0, easyfsl 1.5.0) for the benchmarks only, into
# benchmarks/.peers (a --target folder the benchmark scripts put on sys.path). They are never
# medmeta dependencies. Run from the repository root after `make setup`:
#     bash benchmarks/setup_peers.sh
# How they install here (facts from shared/notes/peers.md): with --no-deps so that torch stays
# 2.13.0; learn2learn ships only an sdist whose generated C files do not compile on Python 3.11,
# so its .pyx files are re-generated with Cython first.
set -euo pipefail
PY=.venv/bin/python
TARGET=benchmarks/.peers
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
mkdir -p "$TARGET"
$PY -m pip install --quiet --target "$BUILD/tools" cython
$PY -m pip download --quiet --no-deps --no-binary :all: learn2learn==0.2.0 -d "$BUILD"
tar -xzf "$BUILD"/learn2learn-0.2.0.tar.gz -C "$BUILD"
(cd "$BUILD/learn2learn-0.2.0" && PYTHONPATH="$BUILD/tools" "$OLDPWD/$PY" -m cython -3 learn2learn/data/*.pyx)
PYTHONPATH="$BUILD/tools" $PY -m pip install --quiet --no-deps --no-build-isolation --target "$TARGET" \
    "$BUILD/learn2learn-0.2.0"
$PY -m pip install --quiet --no-deps --target "$TARGET" easyfsl==1.5.0 gym==0.26.2 gym-notices cloudpickle tqdm
echo "peers installed in $TARGET"
