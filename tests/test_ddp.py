"""Multi-process training on CPU: two processes under `accelerate launch` (gloo) stay in lock-step."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_support import make_config, tiny_dataset, tiny_model

from trainer.config import render_toml

pytestmark = pytest.mark.slow

WORKER = '''
import os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from trainer.config import load_config
from trainer.run import TrainingRun
from trainer import events as ev
cfg = load_config(sys.argv[1])
seen = []
run = TrainingRun(cfg, on_event=seen.append)
result = run.run()
rank = int(os.environ["RANK"])
torch.save({k: v.detach().cpu() for k, v in run.network.state_dict().items()}, Path(sys.argv[2]) / f"rank{rank}.pt")
(Path(sys.argv[2]) / f"rank{rank}.txt").write_text(f"{type(result).__name__} {result.step} {len(seen)}")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_average_gradients_and_only_rank0_writes(tmp_path: Path) -> None:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    model = tiny_model(tmp_path)
    data = tiny_dataset(tmp_path / "data", n=3, repeats=1)  # 3 batches of 1 over 2 processes: padded to 2 each
    cfg = make_config(model, data, tmp_path / "out", training={"max_train_epochs": 2, "train_batch_size": 1},
                      output={"save_precision": "float"})
    (tmp_path / "train.toml").write_text(render_toml(cfg), encoding="utf-8")
    (tmp_path / "worker.py").write_text(WORKER, encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    cmd = [accelerate, "launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(tmp_path / "worker.py"), str(tmp_path / "train.toml"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (tmp_path / "rank0.txt").read_text().split(), (tmp_path / "rank1.txt").read_text().split()
    assert r0[:2] == ["Finished", "4"] and r1[:2] == ["Finished", "4"]  # 2 epochs x ceil(3/2) steps
    assert int(r0[2]) > 0 and int(r1[2]) == 0, "only rank 0 emits events"
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the processes' LoRA weights diverged"
    assert any(w0[k].abs().sum() > 0 for k in w0 if "lora_up" in k), "nothing was trained"
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["t-000001.safetensors", "t.safetensors"]
    from trainer.lora import read_lora_file

    saved, _ = read_lora_file(tmp_path / "out" / "t.safetensors")
    assert all(torch.equal(saved[k], w0[k]) for k in saved)
