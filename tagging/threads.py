"""How many CPU threads each part of kazari uses — decided here, once, for the CLI and the TUI.

On a CPU box every library sizes its own pool to all cores: torch's intra-op pool (OpenMP),
onnxruntime's, the lint/tagger decode pools, and the Textual UI thread all compete, and OpenMP
workers busy-wait ("spin") for ~200 ms after each parallel region, stealing the cores the other
pools need. On a loaded 2-core machine the demo's first training ran 12-20x slower than with
``OMP_NUM_THREADS=1``. So:

- one budget, ``KAZARI_THREADS`` (else ``OMP_NUM_THREADS``, else the cores this process may use;
  ``KAZARI_THREADS=0`` leaves every library at its own default, as before this module existed);
- torch gets the budget minus one core left to the UI/data threads when there are more than 2
  (at most the budget), and one inter-op thread;
- OpenMP waits passively (``OMP_WAIT_POLICY=PASSIVE``) unless the user set a policy, so an idle
  pool gives its cores back at once;
- onnxruntime gets the same intra-op budget and never spins (``tagging.tagger.runtime``).

``prepare_environment()`` must run before torch is imported (``tui.cli.main`` calls it first);
``configure_torch()`` applies the torch part and is idempotent (the trainer calls it too).
This module imports no torch: it only touches torch when the caller already imported it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

ENV = "KAZARI_THREADS"


@dataclass(frozen=True)
class ThreadPlan:
    budget: int  # threads kazari may keep busy at once
    torch_intra: int
    torch_interop: int
    onnx_intra: int
    source: str  # where the budget came from, for the log: "KAZARI_THREADS", "OMP_NUM_THREADS", "cores"

    @property
    def hands_off(self) -> bool:
        return self.budget == 0


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None  # a malformed value falls back to the default rather than crashing startup
    return value if value >= 1 else None


def thread_plan() -> ThreadPlan:
    """The plan for this process, from the environment and the cores it may use."""
    if os.environ.get(ENV, "").strip() == "0":
        return ThreadPlan(0, 0, 0, 0, ENV)
    for name in (ENV, "OMP_NUM_THREADS"):
        value = _env_int(name)
        if value is not None:
            return ThreadPlan(value, value, 1, value, name)
    cores = available_cores()
    torch_intra = cores - 1 if cores > 2 else cores
    return ThreadPlan(cores, torch_intra, 1, torch_intra, "cores")


def prepare_environment() -> ThreadPlan:
    """Set the OpenMP/MKL variables (only those the user did not set) before torch loads."""
    plan = thread_plan()
    if plan.hands_off:
        return plan
    os.environ.setdefault("OMP_NUM_THREADS", str(plan.torch_intra))
    os.environ.setdefault("MKL_NUM_THREADS", str(plan.torch_intra))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return plan


_configured: ThreadPlan | None = None


def configure_torch() -> ThreadPlan:
    """Apply the plan to torch (if imported); safe to call any number of times."""
    global _configured
    plan = thread_plan()
    torch = sys.modules.get("torch")
    if torch is not None and not plan.hands_off and _configured != plan:
        torch.set_num_threads(plan.torch_intra)
        try:
            torch.set_num_interop_threads(plan.torch_interop)
        except RuntimeError:
            pass  # only settable before the first inter-op parallel work; intra-op is what matters
        _configured = plan
    return plan
