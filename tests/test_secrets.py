"""Secrets never travel and nothing planted runs: the code snapshot a submit makes leaves credential-looking files
out and says so; a resume refuses a checkpoint another user wrote into or that changed after its run sealed it.
"""

import json
import os
import shutil
import subprocess
import sys
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


# A planted pickle: unpickling it runs code (here: writes a file), as torch.load(weights_only=False) would.
PLANTED = """
import os, pickle, sys
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[2]}",))
with open(sys.argv[1], "wb") as f:
    pickle.dump(Payload(), f)
"""


def train_zero2(*args):
    """The tiny model under ZeRO 2 in one process, as `--launcher python` runs it: a checkpoint each step."""
    from test_failures_stop import EACH_STEP
    from test_slurm import job_env
    from workshop.launch import free_port

    env = {**job_env(), "HF_HUB_OFFLINE": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    return subprocess.run([sys.executable, "deepspeed_single_gpu/train.py", *EACH_STEP, "--ds-config",
                           "deepspeed_single_gpu/configs/stage2.json", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)



def test_resume_refuses_a_checkpoint_someone_else_wrote_into(tmp_path):
    from workshop.checkpoint_seal import SEAL, why_untrusted

    out = tmp_path / "outputs"
    folders = ["--run-dir", str(tmp_path / "logs" / "sealed"), "--output-dir", str(out)]
    first = train_zero2("--max-steps", "2", *folders)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = out / "checkpoint-2"
    [states] = checkpoint.glob("global_step2/*optim_states.pt")  # what DeepSpeed unpickles on resume
    assert (checkpoint / SEAL).is_file() and why_untrusted(checkpoint) is None

    os.chown(states, 4242, -1)  # another user's file (we are root on the CI machines; else skip this case)
    assert why_untrusted(checkpoint) == f"{states} belongs to user id 4242, not to you ({os.getuid()})"
    os.chown(states, os.getuid(), -1)
    extra = checkpoint / "global_step2" / "extra_states.pt"
    extra.write_bytes(b"x")
    assert why_untrusted(checkpoint) == f"{extra} appeared after the run sealed the checkpoint"
    extra.unlink()

    ran = tmp_path / "the planted pickle ran"
    subprocess.run([sys.executable, "-c", PLANTED, str(states), str(ran)], check=True)
    rerun = train_zero2("--max-steps", "3", *folders)
    assert rerun.returncode == 2, rerun.stderr[-3000:]
    [line] = [line for line in rerun.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: refusing to resume from {checkpoint}: {states} changed after the run sealed")
    assert not ran.exists()  # never unpickled
    assert "[workshop] resuming from" not in rerun.stdout


def test_an_unsealed_checkpoint_must_be_private(tmp_path):
    from workshop.checkpoint_seal import seal, why_untrusted

    checkpoint = tmp_path / "checkpoint-7"
    checkpoint.mkdir(mode=0o755)
    (checkpoint / "optimizer.pt").write_bytes(b"state")
    (checkpoint / "optimizer.pt").chmod(0o644)
    assert why_untrusted(checkpoint) is None  # written before seals existed, by you, writable by you alone
    (checkpoint / "optimizer.pt").chmod(0o664)
    assert why_untrusted(checkpoint) == f"{checkpoint / 'optimizer.pt'} has no seal and others may write to it"
    seal(checkpoint)
    assert why_untrusted(checkpoint) is None  # sealed: a later change shows, whoever may write
    (checkpoint / "optimizer.pt").unlink()
    assert why_untrusted(checkpoint) == f"{checkpoint / 'optimizer.pt'} is gone since the run sealed the checkpoint"
