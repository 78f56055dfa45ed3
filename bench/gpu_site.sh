#!/usr/bin/env bash
# Build .gpu/site.txz: the packages bench/gpu.sh needs beyond a CUDA image's own Python (torch, numpy, pandas,
# pyarrow, xarray, scipy, scikit-learn, matplotlib, pyyaml already there), as wheels for that Python, unpacked and
# packed into one xz tarball small enough to travel with the repo to a machine with no package index (about 45 MB:
# Ray without its Java jar, RLlib, Serve and LLM parts, which the benches never import).
#
#   bash bench/gpu_site.sh [PYTHON_VERSION]      (default 3.12; needs pip and a package index here)
#
# The versions are this project's (pyproject.toml and the .venv they resolved to on 2026-11-26).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" .gpu/site.txz.tmp' EXIT
PLAT=()
for p in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  PLAT+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${PLAT[@]}" \
  -d "$WORK/whl" ray==2.60.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 colorlog==6.12.0 Mako==1.4.3 pydantic==2.14.4 \
  pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 cftime==1.6.6.1 global-land-mask==1.0.0 \
  h5netcdf==1.8.2 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
  tensorboardX==2.6.5 typing_extensions==4.16.0
python3 -m pip install -q --no-deps --no-compile --target "$WORK/site" --python-version "$PYV" --implementation cp \
  --only-binary=:all: "${PLAT[@]}" "$WORK"/whl/*.whl
rm -rf "$WORK"/site/ray/{jars,rllib,serve,llm,workflow,tests} "$WORK/site/bin"
find "$WORK/site" -name '*.pyi' -delete
mkdir -p .gpu
tar cJf .gpu/site.txz.tmp -C "$WORK/site" . && mv .gpu/site.txz.tmp .gpu/site.txz
echo "wrote .gpu/site.txz ($(du -h .gpu/site.txz | cut -f1)); keep .gpu/ out of git (.git/info/exclude) and carry it"
