"""Submit a job that runs the code as it is now, not as it is when the job starts.

    python -m workshop.submit slurm/<script>.slurm [sbatch args] [-- train.py args]

A job can wait in the queue for hours; edits made meanwhile would change what it runs. So this copies the
code and configs into `snapshots/<time>-<script>/` with a `SNAPSHOT.json` (git commit and a hash of the
uncommitted changes), and runs sbatch from there. The job's run folder and checkpoints still land in this
checkout's logs/ and outputs/, and its manifest's `provenance` says `"source": "snapshot"`.
"""
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from workshop.lessons import FOLDERS
from workshop.runlog import git_provenance, utc_now

REPO = Path(__file__).resolve().parents[1]
COPIED = ("workshop", *FOLDERS, "slurm", "pyproject.toml")
# Files that look like credentials (not tokenizer files) stay out of a snapshot: a job needs none of them from the code folder (the
# Hub token comes from the environment or ~/.cache/huggingface), and snapshots outlive the token's rotation.
SECRET_LOOKING = (".env", ".env.*", "*.env", "*hf_token*", "token", "*.token", ".netrc", "*.pem", "*.key",
                  "id_rsa*", "id_ed25519*", "*credentials*", "*secret*")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _ignore(repo, left_out):
    """copytree's ignore: caches, and secret-looking files, whose paths it keeps in left_out."""
    def ignore(folder, names):
        skipped = set(shutil.ignore_patterns("__pycache__", "*.pyc")(folder, names))
        for name in names:
            if any(fnmatch.fnmatch(name.lower(), pattern) for pattern in SECRET_LOOKING):
                skipped.add(name)
                left_out.append(str((Path(folder) / name).relative_to(repo)))
        return skipped
    return ignore


def make_snapshot(script: Path, repo: Path = REPO) -> tuple[Path, list[str]]:
    """The snapshot folder, and the secret-looking files it left out (relative to the checkout)."""
    root = repo / "snapshots"
    root.mkdir(exist_ok=True)
    (root / ".gitignore").write_text("*\n")  # snapshots are copies: git ignores them without a .gitignore edit
    stamp, n = f"{datetime.now():%Y%m%d-%H%M%S}-{script.stem}", 1
    snapshot = root / stamp
    while snapshot.exists():  # two submits in one second
        n += 1
        snapshot = root / f"{stamp}-{n}"
    snapshot.mkdir()
    left_out = []
    for name in COPIED:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, snapshot / name, ignore=_ignore(repo, left_out))
        elif source.is_file():
            shutil.copy2(source, snapshot / name)
    recorded = {**git_provenance(repo), "created": utc_now(), "script": str(script.relative_to(repo)),
                "left_out": sorted(left_out)}
    (snapshot / "SNAPSHOT.json").write_text(json.dumps(recorded, indent=2) + "\n")
    return snapshot, sorted(left_out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    script = Path(argv[0]).resolve()
    sbatch_args, train_args = argv[1:], []
    if "--" in sbatch_args:
        cut = sbatch_args.index("--")
        sbatch_args, train_args = sbatch_args[:cut], sbatch_args[cut + 1:]
    if script.suffix != ".slurm" or script.parent != REPO / "slurm" or not script.is_file():
        fail(f"{argv[0]}: not one of {REPO / 'slurm'}/*.slurm")
    if shutil.which("sbatch") is None:
        fail("sbatch not found: run this on the cluster's login node")

    snapshot, left_out = make_snapshot(script)
    if left_out:
        print(f"left out of the snapshot (secret-looking): {', '.join(left_out)}")
    (REPO / "logs").mkdir(exist_ok=True)  # the job's --output=logs/%x-%j.out, relative to --chdir
    env = dict(os.environ, WORKSHOP_LOGS_ROOT=str(REPO / "logs"), WORKSHOP_OUTPUTS_ROOT=str(REPO / "outputs"))
    if "WORKSHOP_PYTHON" not in env and (REPO / ".venv/bin/python").is_file():
        env["WORKSHOP_PYTHON"] = str(REPO / ".venv/bin/python")  # the snapshot has no venv of its own
    # cwd=snapshot makes SLURM_SUBMIT_DIR the snapshot, where the .slurm file finds common.sh (and so the code);
    # --chdir=REPO puts the job's own .out file in this checkout's logs/.
    submitted = subprocess.run(["sbatch", "--parsable", f"--chdir={REPO}", *sbatch_args,
                                str(snapshot / "slurm" / script.name), *train_args],
                               cwd=snapshot, env=env, capture_output=True, text=True)
    if submitted.returncode != 0:
        fail(f"sbatch failed: {submitted.stderr.strip()} (snapshot kept in {snapshot})")
    job_id = submitted.stdout.strip().split(";")[0]
    print(f"submitted job {job_id}; code snapshot {snapshot}")
    print(f"run folder: {REPO / 'logs'}/{script.stem}-{job_id}/ (if the script keeps its default name)")
    return job_id


if __name__ == "__main__":
    main()
