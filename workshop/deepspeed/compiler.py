"""The c++ that DeepSpeed's op builds run (torch compiles with $CXX): a small script kept beside the builds.

It drops the -g DeepSpeed passes to every op: the debug information took 40% of a translation unit's compile time
here (async_io's deepspeed_py_copy.cpp: 33.7 s with it, 19.9 s without, 2 cores), and nobody steps into these ops
with a debugger in class.

And for a build of many units on few cores (4 or more a core: async_io's 12 on a 2-core laptop or CI machine) it
compiles torch/extension.h once, with the build's own flags, into a precompiled header (pch-<checksum of the flags>/
in the op's folder) that each unit then starts from. Measured on 2 idle cores (2026-12-07, gcc 12.2, torch 2.13):
a unit 22 CPU-s plain, 9.7 from the header, which takes 38-45 CPU-s to make; worth it from about 3.4 units a core.
gcc reads the header itself where the .gch does not fit, and a unit that fails this way is compiled the plain way
again, so the header only ever saves time. It is 785 MB: `remove_precompiled_headers` deletes it once the op is
built (ninja does not list it among an object's dependencies: it is found as a system header).

The script's path stays `c++-no-debug-info` in the build folder (not the package): ninja compiles an object again
when its command line changes, so every process that uses the folder (a test's copy of the repository too) must
name the same path.
"""

import os
import shutil
from pathlib import Path

COMPILER = """#!/bin/sh
# Written by workshop.deepspeed.compiler (see its docstring): c++ without -g, and a build of 4 or more units a core
# compiles torch/extension.h once into pch-<checksum of the flags>/ and starts each unit from it.
for arg; do shift; [ "$arg" = -g ] || set -- "$@" "$arg"; done
case " $* " in *" -MMD "*) ;; *) exec c++ "$@" ;; esac  # ninja's compiles (run in the op's folder) only
units=$(grep -c ': compile ' build.ninja 2>/dev/null) || units=0
[ "$units" -ge $((4 * $(nproc))) ] && command -v flock >/dev/null || exec c++ "$@"
flags() { for arg; do case $arg in -MMD|-MF|-c|-o|*.o|*.d|*.cpp|*.cc) ;; *) printf '%s\\n' "$arg" ;; esac; done; }
pch=pch-$(flags "$@" | cksum | cut -d' ' -f1)
mkdir -p "$pch"
(
    flock 9
    [ -e "$pch/torch_extension.h.gch" ] || [ -e "$pch/failed" ] || {
        printf '#include <torch/extension.h>\\n' >"$pch/torch_extension.h"
        flags "$@" | tr '\\n' '\\0' | xargs -0 sh -c 'c++ "$@" -x c++-header "$0/torch_extension.h" -o "$0/part.gch"' \\
            "$pch" && mv "$pch/part.gch" "$pch/torch_extension.h.gch" || : >"$pch/failed"
    }
) 9>"$pch/lock"
if [ -e "$pch/torch_extension.h.gch" ]; then
    c++ -isystem "$pch" -include torch_extension.h "$@" && exit 0
fi
exec c++ "$@"
"""


def compiler(folder: Path) -> Path:
    """The script, written into the build folder (once, and again when this module's text of it changes)."""
    script = folder / "c++-no-debug-info"
    if not script.exists() or script.read_text() != COMPILER:
        folder.mkdir(parents=True, exist_ok=True)
        draft = folder / f".c++-no-debug-info.{os.getpid()}"
        draft.write_text(COMPILER)
        draft.chmod(0o755)
        os.replace(draft, script)  # whole, for the other processes that may read it now
    return script


def remove_precompiled_headers(op_folder: Path):
    """Delete the precompiled headers an op's build made (785 MB each); the built op does not need them."""
    for pch in op_folder.glob("pch-*"):
        shutil.rmtree(pch, ignore_errors=True)
