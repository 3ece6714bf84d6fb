#!/usr/bin/env bash
# Regenerate the locked environment after changing a pin in pyproject.toml:
#
#   pip install uv==0.13.8 && requirements/lock.sh
#
# writes requirements/lock.txt (every package of `.[book,test]`, transitive ones included,
# with sha256 hashes), requirements/binder.txt (the lean Binder set: `.[book]` plus
# ipywidgets, at the versions of lock.txt), environment.yml and binder/environment.yml.
# Target: CPython 3.11 on Linux x86_64 (manylinux_2_28).
#
# torch is resolved but left out of the lock files: run.sh installs it in a step of its own
# from the index that CTDNN_TORCH_INDEX selects (CPU or CUDA build, same version). Its
# dependencies are resolved from the CPU build's metadata, which lists no CUDA packages;
# that build comes from PyTorch's CPU index, or from a folder holding the wheel when
# CTDNN_TORCH_FIND_LINKS names one.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
if [ -n "${CTDNN_TORCH_FIND_LINKS:-}" ]; then
    torch_source=(--find-links "$CTDNN_TORCH_FIND_LINKS")
else
    torch_source=(--torch-backend cpu)
fi
common=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --no-emit-package torch --custom-compile-command "requirements/lock.sh" --quiet
        "${torch_source[@]}")
"$UV" pip compile pyproject.toml requirements/build.in --all-extras "${common[@]}" \
    -o requirements/lock.txt
"$UV" pip compile pyproject.toml requirements/binder.in --extra book \
    --constraint requirements/lock.txt "${common[@]}" -o requirements/binder.txt
python3 requirements/export_env.py
echo "wrote requirements/lock.txt, requirements/binder.txt, environment.yml, binder/environment.yml"
