"""Thread plan before/after on the demo config: ``python bench/threads_bench.py [--keep DIR]``.

Creates the demo workspace (``kazari demo``'s), then trains it with ``kazari train --plain`` in a
fresh process per variant and prints wall time and images/s:

- ``library defaults`` — ``KAZARI_THREADS=0``: torch, OpenMP and onnxruntime size and spin their
  own pools (kazari before tagging/threads.py);
- ``kazari plan`` — the default plan of ``tagging.threads``;
- ``OMP_NUM_THREADS=1`` — the issue's workaround, for reference.

A second process keeps ``--load`` cores busy meanwhile (the TUI's lint child / other work on a
shared box). Figures, not assertions: speed targets do not belong in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "library defaults": {"KAZARI_THREADS": "0"},
    "kazari plan": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}

BURN = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="workspace folder (default: a temporary one)")
    parser.add_argument("--load", type=int, default=1, help="busy-looping processes alongside (default 1)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="kazari-threads-"))
    from tui.demo import create_demo

    config = create_demo(root)
    text = config.read_text()
    import re

    text = re.sub(r"(?m)^max_train_epochs\s*=.*$", f"max_train_epochs = {args.epochs}", text)
    text = re.sub(r"(?m)^sample_every_n_epochs\s*=.*$", "sample_every_n_epochs = 0", text)
    config.write_text(text)
    images = len(list((root / "dataset").rglob("*.png")))
    print(f"demo workspace {root}: {images} images, {args.epochs} epoch(s), cores {os.cpu_count()}, "
          f"load {args.load}")
    for name, extra in VARIANTS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "KAZARI_THREADS",
                                                                 "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
        env.update(extra)
        burners = [subprocess.Popen([sys.executable, "-c", BURN.format(s=3600)]) for _ in range(args.load)]
        out_dir = root / f"out-{len(name)}"
        try:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "tui.cli", "train", str(config), "--plain"],
                env=env, cwd=root, capture_output=True, text=True, timeout=3600,
            )
            wall = time.perf_counter() - t0
        finally:
            for b in burners:
                b.kill()
                b.wait()
        ok = proc.returncode == 0
        print(json.dumps({"variant": name, "ok": ok, "wall_s": round(wall, 1),
                          "tail": proc.stdout.strip().splitlines()[-1:] if ok else proc.stderr[-400:]}))
        del out_dir
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
