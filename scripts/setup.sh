#!/usr/bin/env bash
# Set up (or reuse) the project's virtualenv in .venv. Sourced by run_workshop.sh and test.sh.
#   WORKSHOP_TORCH   the torch requirement installed first when the venv has none (default torch==2.13.0,
#                    the CPU wheel on this project's machines; on a GPU cluster install your CUDA build first)
#   WORKSHOP_KERNEL_USER=1  also register the Jupyter kernel in ~/.local/share/jupyter: a cluster's JupyterHub
#                    runs its own JupyterLab, which sees kernels there, not inside this venv
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WORKSHOP_VENV:-$REPO_ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
    # First, so that nothing below pulls an unpinned (multi-GB CUDA) torch.
    echo "[setup] installing ${WORKSHOP_TORCH:-torch==2.13.0}"
    "$PY" -m pip install -q "${WORKSHOP_TORCH:-torch==2.13.0}"
fi
# Reinstall only when pyproject.toml changed since the last setup.
stamp="$VENV/.workshop-setup-$(sha1sum "$REPO_ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "[setup] installing the workshop package and its dependencies"
    "$PY" -m pip install -q -e "$REPO_ROOT[dev,notebook]"
    touch "$stamp"
fi
# The kernel the notebooks name; --sys-prefix puts it inside the venv, where the venv's `jupyter lab` looks.
kernel=(-m ipykernel install --name deepspeed-workshop --display-name "Python (deepspeed-workshop)")
if ! grep -qF "\"$PY\"" "$VENV/share/jupyter/kernels/deepspeed-workshop/kernel.json" 2>/dev/null; then
    "$PY" "${kernel[@]}" --sys-prefix
fi
if [ "${WORKSHOP_KERNEL_USER:-0}" = 1 ]; then
    "$PY" "${kernel[@]}" --user
fi
export PATH="$VENV/bin:$PATH" WORKSHOP_PYTHON="$PY"
echo "[setup] ready: $("$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
