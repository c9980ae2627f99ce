"""Secrets never travel: the code snapshot a submit makes leaves credential-looking files out and says so."""

import json
import shutil
from pathlib import Path

from workshop.submit import make_snapshot

REPO = Path(__file__).resolve().parents[1]


def test_snapshot_leaves_secret_looking_files_out_and_names_them(tmp_path):
    repo = tmp_path / "checkout"
    shutil.copytree(REPO / "workshop", repo / "workshop", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "slurm", repo / "slurm")
    shutil.copytree(REPO / "baseline", repo / "baseline")
    secrets = {"baseline/.env": "HF_TOKEN=hf_abc", "workshop/.hf_token": "hf_abc", "slurm/cluster.pem": "KEY",
               "baseline/.env.local": "X=1", "workshop/my_credentials.json": "{}"}
    for name, text in secrets.items():
        (repo / name).write_text(text)

    snapshot, left_out = make_snapshot(repo / "slurm" / "baseline.slurm", repo=repo)

    assert left_out == sorted(secrets)
    assert json.loads((snapshot / "SNAPSHOT.json").read_text())["left_out"] == sorted(secrets)
    assert not [name for name in secrets if (snapshot / name).exists()]
    # what the job needs is all there, the tokenizer files of the embedded model included
    assert (snapshot / "workshop" / "assets" / "bloom-tiny" / "tokenizer.json").is_file()
    assert (snapshot / "baseline" / "train.py").is_file() and (snapshot / "slurm" / "common.sh").is_file()
    copied = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()} - {"SNAPSHOT.json"}
    expected = {str(p.relative_to(repo)) for name in ("workshop", "slurm", "baseline")
                for p in (repo / name).rglob("*") if p.is_file()} - set(secrets)
    assert copied == expected
