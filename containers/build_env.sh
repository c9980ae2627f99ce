#!/usr/bin/env bash
# The one build step of both container recipes (Dockerfile's RUN, deepspeed-workshop.def's %post), run inside the
# image being built: the venv of scripts/setup.sh at $WORKSHOP_VENV, then DeepSpeed reinstalled with the ops the
# lessons load (fused_adam, cpu_adam) compiled in, so no job compiles them inside its GPU allocation.
#   TORCH_CUDA_ARCH_LIST  the GPUs to compile for: there is no GPU at build time to ask (default 8.0;9.0: A100, H100/H200)
#   DS_ACCELERATOR        cuda (default); cpu builds the CPU ops, for an image without CUDA
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WORKSHOP_VENV="${WORKSHOP_VENV:-/opt/venv}"
source "$REPO_ROOT/scripts/setup.sh"  # torch ($WORKSHOP_TORCH), the package with [dev,notebook], the kernel
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" DS_ACCELERATOR="${DS_ACCELERATOR:-cuda}"
export DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1 DS_BUILD_CPU_ADAM=1
[ "$DS_ACCELERATOR" = cpu ] && export DS_BUILD_FUSED_ADAM=0  # fused_adam is a CUDA kernel
version="$("$WORKSHOP_PYTHON" -c 'import importlib.metadata as m; print(m.version("deepspeed"))')"
echo "[build_env] rebuilding deepspeed $version with its ops for $DS_ACCELERATOR ($TORCH_CUDA_ARCH_LIST)"
"$WORKSHOP_PYTHON" -m pip install -q setuptools wheel ninja  # the build below runs without isolation, on this torch
"$WORKSHOP_PYTHON" -m pip install -q --no-build-isolation --no-deps --no-binary deepspeed --force-reinstall \
    "deepspeed==$version"
"$WORKSHOP_PYTHON" - <<'PY'
import os
from deepspeed.git_version_info import installed_ops

wanted = [op for op in ("fused_adam", "cpu_adam") if os.environ[f"DS_BUILD_{op.upper()}"] == "1"]
missing = [op for op in wanted if not installed_ops.get(op)]
if missing:
    raise SystemExit(f"error: deepspeed was installed without the prebuilt ops {', '.join(missing)}")
print(f"[build_env] prebuilt ops in the image: {', '.join(wanted)}")
PY
