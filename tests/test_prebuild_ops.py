"""workshop.prebuild_ops: arch-list fixing, the extensions folder, and that a prebuilt op loads fast."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workshop.deepspeed.compiler import compiler, remove_precompiled_headers
from workshop.deepspeed.ops import cache_cpu_info, extensions_dir, fix_arch_list, setup_build_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, fixed", [
    ("9.0a", "9.0"),                   # what the H100 images set; DeepSpeed 0.19.8 fails on the "a"
    ("8.0;8.6;9.0a", "8.0;8.6;9.0"),
    ("8.9+PTX", "8.9+PTX"),
    ("9.0a+PTX", "9.0+PTX"),
    ("10.0f 12.0a", "10.0;12.0"),      # torch also accepts spaces
    ("9.0 9.0a", "9.0"),               # the same arch once
    (" 7.5 ; 8.0 ", "7.5;8.0"),
])
def test_fix_arch_list_leaves_what_deepspeeds_builder_parses(value, fixed):
    env = {"TORCH_CUDA_ARCH_LIST": value}
    assert fix_arch_list(env) == fixed and env["TORCH_CUDA_ARCH_LIST"] == fixed
    for entry in fixed.split(";"):  # DeepSpeed's own parse: int(major), int(minor without +PTX)
        major, minor = entry.split(".")
        int(major), int(minor.split("+")[0])


def test_fix_arch_list_without_the_variable_changes_nothing():
    env = {"PATH": "/bin"}
    assert fix_arch_list(env) is None and env == {"PATH": "/bin"}


def test_extensions_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.delenv("WORKSHOP_EXTENSIONS_DIR", raising=False)
    assert str(extensions_dir()).startswith(str(Path.home() / ".cache/workshop/torch_extensions"))
    monkeypatch.setenv("WORKSHOP_EXTENSIONS_DIR", str(tmp_path / "shared"))
    assert extensions_dir().parent == tmp_path / "shared"
    assert f"py{sys.version_info.major}{sys.version_info.minor}_torch" in extensions_dir().name
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    assert extensions_dir() == tmp_path / "mine"


def test_setup_build_env_points_builds_at_the_folder_and_fixes_the_arch_list(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("WORKSHOP_EXTENSIONS_DIR", str(tmp_path))
    env = {"TORCH_CUDA_ARCH_LIST": "9.0a", "PATH": f"/usr/bin{os.pathsep}/bin"}
    path = setup_build_env(env)
    bin_dir = str(Path(sys.executable).parent)  # this venv's: pip's ninja is there (a DeepSpeed dependency)
    assert env == {"TORCH_EXTENSIONS_DIR": str(path), "TORCH_CUDA_ARCH_LIST": "9.0",
                   "PATH": os.pathsep.join([bin_dir, "/usr/bin", "/bin"]), "CXX": str(path / "c++-no-debug-info")}
    chosen = {"CXX": "clang++"}
    setup_build_env(chosen)
    assert chosen["CXX"] == "clang++"  # the user's compiler stays


def test_ops_compile_without_debug_information(tmp_path):
    """The compiler setup_build_env names drops DeepSpeed's -g (40% of an op's compile time) and passes the rest."""
    compiler = setup_build_env({})
    source = tmp_path / "op.cpp"
    source.write_text("int scale(int x) { return 2 * x; }\n")
    for flags, debug in (([], False), (["-g"], False), (["-g3"], True)):  # -g3 is not DeepSpeed's; it passes
        result = subprocess.run([str(compiler / "c++-no-debug-info"), "-O0", *flags, "-c", str(source), "-o",
                                 str(tmp_path / "op.o")], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert (b".debug_info" in (tmp_path / "op.o").read_bytes()) is debug, flags


def ninja_compile(op, unit, *flags):
    """One unit compiled the way torch's build.ninja does it, in the op's folder, with gcc's -H (the headers read:
    a precompiled one used is marked `!`, one that did not fit `x`)."""
    return subprocess.run([str(compiler(op.parent)), "-MMD", "-MF", f"{unit}.o.d", *flags, "-H", "-c",
                           str(op / f"{unit}.cpp"), "-o", f"{unit}.o"], cwd=op, capture_output=True, text=True)


def test_a_build_of_many_units_a_core_starts_each_from_one_precompiled_header(tmp_path):
    """async_io's 12 units on 2 cores: torch/extension.h is compiled once and each unit starts from it (a stand-in
    header here: torch's takes 40 CPU-s); a build of fewer units compiles plainly; the header is not among an
    object's dependencies, so deleting it after the build leaves nothing for ninja to compile again."""
    include = tmp_path / "include"
    (include / "torch").mkdir(parents=True)
    (include / "torch" / "extension.h").write_text("#pragma once\ninline int forty_two() { return 42; }\n")
    flags = ["-isystem", str(include), "-O0", "-g", "-std=c++17"]
    cores = len(os.sched_getaffinity(0))
    for units, precompiled in ((2, False), (4 * cores, True)):
        op = tmp_path / f"op{units}"
        op.mkdir()
        (op / "build.ninja").write_text("".join(f"build u{i}.o: compile {op}/u{i}.cpp\n" for i in range(units)))
        for unit in ("u0", "u1"):
            (op / f"{unit}.cpp").write_text(f"#include <torch/extension.h>\nint {unit}() {{ return forty_two(); }}\n")
            compiled = ninja_compile(op, unit, *flags)
            assert compiled.returncode == 0, compiled.stderr
            used = [line for line in compiled.stderr.splitlines() if line.endswith("torch_extension.h.gch")]
            assert [line.split()[0] for line in used] == (["!"] if precompiled else []), compiled.stderr
            assert "pch-" not in (op / f"{unit}.o.d").read_text()  # found as a system header: not a dependency
        assert len(list(op.glob("pch-*/torch_extension.h.gch"))) == precompiled  # one for the build's flags
        remove_precompiled_headers(op)
        assert not list(op.glob("pch-*"))


def test_a_precompiled_header_that_cannot_be_made_leaves_the_plain_compile(tmp_path):
    """No torch/extension.h to precompile (or a full disk): the unit is compiled the plain way, and the build does
    not try again for each unit."""
    op = tmp_path / "op"
    op.mkdir()
    units = 4 * len(os.sched_getaffinity(0))
    (op / "build.ninja").write_text("".join(f"build u{i}.o: compile u{i}.cpp\n" for i in range(units)))
    (op / "u0.cpp").write_text("int u0() { return 42; }\n")
    compiled = ninja_compile(op, "u0", "-O0")
    assert compiled.returncode == 0, compiled.stderr
    assert (op / "u0.o").exists() and len(list(op.glob("pch-*/failed"))) == 1


def test_cpu_info_is_asked_once_for_every_process_on_this_cpu(monkeypatch, tmp_path):
    """DeepSpeed asks py-cpuinfo 2-5 times a training process (a new Python each time, ~1 CPU-s): the first answer
    is kept beside the builds, and a later process with a fresh memory reads it there."""
    import cpuinfo

    truth = cpuinfo.get_cpu_info()
    asked = []

    def ask():
        asked.append(1)
        return truth

    for process in range(2):
        monkeypatch.setattr(cpuinfo, "get_cpu_info", ask)  # a fresh process: py-cpuinfo's own function
        cache_cpu_info(tmp_path)
        answers = [cpuinfo.get_cpu_info() for _ in range(3)]
        assert answers == [truth] * 3 and asked == [1], process
        answers[0]["flags"].clear()  # a caller's change stays its own
        assert cpuinfo.get_cpu_info() == truth
    assert len(list(tmp_path.glob(".cpuinfo-*.json"))) == 1
    other = tmp_path / "cpuinfo"  # a CPU of another kind sharing the folder is asked for its own answer
    other.write_text("vendor_id\t: OtherVendor\ncpu MHz\t\t: 2000.0\n")
    monkeypatch.setattr(cpuinfo, "get_cpu_info", ask)
    cache_cpu_info(tmp_path, described_in=other)
    assert cpuinfo.get_cpu_info() == truth and len(asked) == 2
    assert len(list(tmp_path.glob(".cpuinfo-*.json"))) == 2


LOAD_ONCE = """
import time
from deepspeed.ops.op_builder.all_ops import ALL_OPS
from workshop.deepspeed.ops import setup_build_env
setup_build_env()  # as the training entry does before DeepSpeed loads an op
start = time.perf_counter()
ALL_OPS["cpu_adam"].load(verbose=False)
print(f"SECONDS {time.perf_counter() - start:.2f}")
"""


def test_prebuilt_cpu_adam_loads_from_the_folder_without_compiling():
    """Builds cpu_adam into the shared folder (about a minute the first time, reused afterwards),
    then a fresh process loads it from there without compiling: the build's files are untouched (a timing would
    say the same less surely on a busy machine). That process finds the system's ninja first on its PATH, as a
    notebook kernel or a batch job may: with another ninja than the build's, torch compiled it all again."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    build = subprocess.run([sys.executable, "-m", "workshop.prebuild_ops", "--ops", "cpu_adam"],
                           env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr
    assert "cpu_adam ... ready in" in build.stdout
    folder = Path(build.stdout.split("export TORCH_EXTENSIONS_DIR=")[1].strip())
    assert list((folder / "cpu_adam").glob("cpu_adam*.so"))

    def build_files():  # the compiler's and ninja's files (not torch's `lock`, which any loading process makes)
        files = [path for path in (folder / "cpu_adam").iterdir() if path.name != "lock"]
        return {path.name: path.stat().st_mtime_ns for path in files}

    built = build_files()
    system_first = {**env, "TORCH_EXTENSIONS_DIR": str(folder), "PATH": f"/usr/bin{os.pathsep}{env['PATH']}"}
    load = subprocess.run([sys.executable, "-c", LOAD_ONCE], env=system_first, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr
    print(f"loaded in {float(load.stdout.split('SECONDS')[1]):.1f} s")
    assert build_files() == built


def copy_of_the_shared_cpu_adam(tmp_path):
    """The shared folder's cpu_adam (built if need be) copied into tmp_path/cpu_adam, and an environment whose loads
    of the copy compile nothing: the shared folder's compiler, so that ninja sees the command lines it built with (a
    compiler named by its path in another folder is another command: the copy would be compiled again, a minute on
    2 cores)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    build = subprocess.run([sys.executable, "-m", "workshop.prebuild_ops", "--ops", "cpu_adam"],
                           env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr
    shared = Path(build.stdout.split("export TORCH_EXTENSIONS_DIR=")[1].strip())
    shutil.copytree(shared / "cpu_adam", tmp_path / "cpu_adam", ignore=shutil.ignore_patterns("lock"))
    return {**env, "CXX": str(shared / "c++-no-debug-info")}


@pytest.mark.slow
def test_a_build_killed_midway_does_not_hang_the_next_job(tmp_path):
    """A build killed mid-way leaves torch's `lock` file in the op's folder, and torch waits for it to go, forever:
    every later job hung at start-up. The next load now clears it and finishes. The op is a copy of the shared
    folder's cpu_adam (the test above builds it), so this loads without compiling."""
    same_compiler = copy_of_the_shared_cpu_adam(tmp_path)
    objects = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "cpu_adam").glob("*.o")}
    (tmp_path / "cpu_adam" / "lock").touch()  # what the killed build left
    # killed long enough ago: a `lock` in a folder that changed lately may be a live load's, and is waited for
    again = subprocess.run([sys.executable, "-m", "workshop.prebuild_ops", "--ops", "cpu_adam", "--dir",
                            str(tmp_path)], env={**same_compiler, "WORKSHOP_STALE_LOCK_S": "0"},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "a build of cpu_adam was killed before it finished" in again.stdout
    assert "cpu_adam ... " in again.stdout and not (tmp_path / "cpu_adam" / "lock").exists()
    assert objects and objects == {path.name: path.stat().st_mtime_ns for path in (tmp_path / "cpu_adam").glob("*.o")}


def test_a_live_loads_lock_is_waited_for_not_removed(tmp_path):
    """DeepSpeed loads its shared-memory collectives itself (init_distributed), holding torch's `lock` without the
    workshop's flock: a workshop load that came then removed that `lock` as a killed build's, and the other load
    failed at its end (a two-node job in CI). A fresh `lock` is waited for until its holder removes it."""
    same_compiler = copy_of_the_shared_cpu_adam(tmp_path)
    lock = tmp_path / "cpu_adam" / "lock"
    lock.touch()  # another process's load, under way
    loading = subprocess.Popen([sys.executable, "-m", "workshop.prebuild_ops", "--ops", "cpu_adam", "--dir",
                                str(tmp_path)], env=same_compiler,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert loading.poll() is None, loading.communicate()  # waiting for the other load
    lock.unlink()  # the other load's end
    out, err = loading.communicate(timeout=300)
    assert loading.returncode == 0, err
    assert "was killed" not in out and "cpu_adam ... ready" in out
