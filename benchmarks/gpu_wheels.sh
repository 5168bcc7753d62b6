#!/usr/bin/env bash
# Wheels that benchmarks/backends.py needs on a GPU machine that has PyTorch and JAX but no Keras,
# no pydantic and no network (Python 3.12, x86_64 Linux): downloaded here, into .whl/, to be
# carried there and installed with `pip install --no-index --no-deps --target`. docs/performance.md
# gives the whole command. Pass another folder as $1, another Python version as $2.
set -euo pipefail
dest="${1:-.whl}"
python_version="${2:-3.12}"
mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# Keras (the version installed here) and what it needs beyond such a machine's packages (namex,
# optree), and pydantic (ablate.spec) with the one pydantic-core its release pins.
keras_version="$(${PYTHON:-.venv/bin/python} -c 'import importlib.metadata as m; print(m.version("keras"))')"
fetch() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$dest" "$@"
}
fetch "keras==$keras_version" namex optree "pydantic>=2.7,<3" annotated-types typing-inspection
core="$(unzip -p "$dest"/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core\s*\(==[^ ;]*\).*/\1/p' | head -1)"
fetch "pydantic-core$core"
du -sh "$dest"
ls "$dest"
