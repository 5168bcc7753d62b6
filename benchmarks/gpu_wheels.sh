#!/usr/bin/env bash
# Wheels that benchmarks/backends.py needs on a GPU machine that has PyTorch and JAX but no Keras,
# no pydantic and no network (x86_64 Linux): downloaded here, into DEST, to be carried there and
# installed with `pip install --no-index --no-deps --target`. docs/performance.md gives the command.
#
#   bash benchmarks/gpu_wheels.sh [--runtime] [DEST [PYTHON_VERSION]]     (default .whl 3.12)
#
# Without --runtime: Keras (this checkout's version) and what it needs beyond such a machine's
# packages (namex, optree), and pydantic with the pydantic-core its release pins: 5.5 MB, enough for
# the throughput, precision, compile and memory rows. With --runtime: also ablate's runtime (Optuna,
# MLflow, keras-tuner, ...) with every dependency the machine's image lacks
# (benchmarks/gpu_image_packages.txt): about 50 MB, for the studies-per-hour rows.
set -euo pipefail
runtime=0
if [ "${1:-}" = "--runtime" ]; then runtime=1; shift; fi
dest="${1:-.whl}"
python_version="${2:-3.12}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
version() { ${PYTHON:-.venv/bin/python} -c "import importlib.metadata as m; print(m.version('$1'))"; }
fetch() {
  python3 -m pip download --quiet --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$dest" "$@"
}
if [ "$runtime" = 1 ]; then
  fetch "keras==$(version keras)" "optuna==$(version optuna)" "mlflow==$(version mlflow)" \
    "keras-tuner==$(version keras-tuner)" "pydantic==$(version pydantic)" cmaes plotly
  # Drop what the machine's image has: its own builds (CUDA, its numpy) must stay the ones used.
  have="$(grep -v '^#' "$here/gpu_image_packages.txt" | tr ' ' '\n' | sed '/^$/d' | tr 'A-Z_.' 'a-z--')"
  for wheel in "$dest"/*.whl; do
    name="$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')"
    if grep -qx "$name" <<<"$have"; then rm "$wheel"; fi
  done
else
  fetch --no-deps "keras==$(version keras)" namex optree "pydantic>=2.7,<3" annotated-types typing-inspection
  core="$(unzip -p "$dest"/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core\s*\(==[^ ;]*\).*/\1/p' | head -1)"
  fetch --no-deps "pydantic-core$core"
fi
du -sh "$dest"
ls "$dest" | wc -l
