# shellcheck shell=bash
# Sourced by bench/gpu_engine.sh and bench/gpu_quality.sh: the Python wheels that travel to
# a GPU machine without a package index (its Python is 3.12), in .whl/.

# download_wheels SPEC...: here (dev machine), the wheels into .whl/; .whl/ and .gpu/ stay
# out of git.
download_wheels() {
  local w d
  for w in "$@"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$w"
  done
  mkdir -p .git/info
  for d in /.gpu/ /.whl/; do
    grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
  done
}

# install_wheels SITE: there, the wheels of .whl/ into SITE (a PYTHONPATH folder).
install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$1" .whl/*.whl
}
