"""The set-up paths a cluster admin uses: environment.yml (conda) and the container recipes build the same
environment as scripts/setup.sh, and environment.yml's pip section resolves against the package index."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
SETUP = (REPO / "scripts" / "setup.sh").read_text()


def conda_env():
    spec = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [dep for dep in spec["dependencies"] if isinstance(dep, str)]
    (pip,) = [dep["pip"] for dep in spec["dependencies"] if isinstance(dep, dict)]
    return spec, conda, pip


def setup_extras():
    """The extras scripts/setup.sh installs: `pip install -e "$REPO_ROOT[dev,notebook]"`."""
    (extras,) = re.findall(r'pip install -q -e "\$REPO_ROOT\[([\w,]+)\]"', SETUP)
    return extras.split(",")


def test_environment_yml_matches_setup_sh():
    spec, conda, pip = conda_env()
    assert spec["name"] == "deepspeed-workshop"  # the kernel name too
    (python,) = [dep for dep in conda if dep.startswith("python=")]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python.split("=")[1] + ".0" in SpecifierSet(requires)
    (torch_default,) = re.findall(r'WORKSHOP_TORCH:-(torch==[\d.]+)', SETUP)[:1]
    assert torch_default in pip, f"environment.yml's torch should be setup.sh's default {torch_default}"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"-e .[{','.join(setup_extras())}]" in pip and set(setup_extras()) <= set(extras)


def test_environment_yml_pip_section_resolves(tmp_path):
    """pip resolves the pip section from scratch (--ignore-installed): every name and version exists."""
    _, _, pip = conda_env()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pip) + "\n")
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                             "--report", str(report), "-r", str(requirements)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"torch", "deepspeed", "transformers", "jupyterlab", "ipykernel", "deepspeed-workshop"} <= names


def test_container_recipes_share_one_build_step():
    """The Dockerfile and the Apptainer definition both run containers/build_env.sh on the same CUDA devel base,
    and build_env.sh builds through scripts/setup.sh, so all three set-ups install the same things."""
    dockerfile = (REPO / "containers" / "Dockerfile").read_text()
    definition = (REPO / "containers" / "deepspeed-workshop.def").read_text()
    (base,) = re.findall(r"^ARG BASE=(\S+)", dockerfile, re.M)
    assert re.search(rf"^From: {re.escape(base)}$", definition, re.M) and "devel" in base  # nvcc for the ops
    for recipe in (dockerfile, definition):
        assert "bash containers/build_env.sh" in recipe
    build = (REPO / "containers" / "build_env.sh").read_text()
    assert 'source "$REPO_ROOT/scripts/setup.sh"' in build and "DS_BUILD_CPU_ADAM=1" in build
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "logs" in ignored  # COPY . must not carry a venv or run folders into the image


def test_build_env_refuses_a_deepspeed_without_prebuilt_ops(tmp_path):
    """build_env.sh's last step fails, naming the ops, when DeepSpeed came without them (this venv's wheel)."""
    build = (REPO / "containers" / "build_env.sh").read_text()
    (check,) = re.findall(r"<<'PY'\n(.*?)\nPY\n", build, re.S)
    from deepspeed.git_version_info import installed_ops

    env = {"DS_BUILD_FUSED_ADAM": "0", "DS_BUILD_CPU_ADAM": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    if installed_ops.get("cpu_adam"):
        assert result.returncode == 0 and "prebuilt ops in the image: cpu_adam" in result.stdout
    else:
        assert result.returncode != 0
        assert "error: deepspeed was installed without the prebuilt ops cpu_adam" in result.stderr
