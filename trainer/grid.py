"""The epoch x weight XY grid: every saved epoch at several LoRA weights, for one or more prompts.

API (stable)::

    loras = find_run_loras(run_dir, output_name=None)   # [(label, path)] epochs in order, "last" last
    result = build_grid(bundle, loras_or_run_dir, prompts, weights=DEFAULT_WEIGHTS, seeds=None,
                        out_dir=None, sampler="euler_a", steps=None, clip_skip=None,
                        max_token_length=75, progress=None, cancel=None)
    result: GridResult  # rows (labels), weights, prompts, seeds, cells, grid_images, grid_paths,
                        # index_path, complete, cancelled; result.cell(p, r, c) -> GridCell | None

- The base model is the already-loaded ``bundle``; each LoRA is copied into the live LoRA modules
  in place (``Sampler.set_lora``), and the weight is only a multiplier change.
- Every cell of a (prompt, seed) uses the same initial noise (noise depends on the seed only).
- Weight 0 is the base model whatever the epoch: it is rendered once per (prompt, seed) and reused
  down the column.
- ``progress(done, total, cell)`` after each cell; ``cancel()`` (or a ``threading.Event``) stops after
  the current step; the cells already done are kept: their PNGs, a partial grid and the JSON index
  (``"complete": false``) are still written.
- Files in ``out_dir``: ``grid_p{i}_s{seed}.png`` (labelled: columns = weights, rows = epochs),
  ``cells/p{i}_s{seed}_{row}_w{weight}.png`` (PNG info included), ``index.json``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging.atomic import atomic_write_text
from tagging.errors import UserError
from trainer.models import SD1Bundle
from trainer.prompts import PromptSpec, load_prompts
from trainer.sampling import Cancelled, Sampler, save_png

DEFAULT_WEIGHTS = (0.0, 0.4, 0.6, 0.8, 1.0)
_EPOCH_RE = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})$")
# Saved on stop / "save now": the only copy of a stopped run's last weights.
_STEP_RE = re.compile(r"^(?P<name>.+)-step(?P<step>\d{8})$")
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")


@dataclass
class GridCell:
    prompt_index: int
    seed: int
    row: int
    col: int
    label: str
    weight: float
    lora: Path | None
    image: Any = None
    path: Path | None = None
    reused: bool = False  # weight-0 cell copied from the first row


@dataclass
class GridResult:
    rows: list[str]
    lora_files: list[Path]
    weights: list[float]
    prompts: list[PromptSpec]
    seeds: list[int]
    cells: dict[tuple[int, int, int, int], GridCell] = field(default_factory=dict)  # (p, seed i, row, col)
    grid_images: dict[tuple[int, int], Any] = field(default_factory=dict)
    grid_paths: dict[tuple[int, int], Path] = field(default_factory=dict)
    index_path: Path | None = None
    complete: bool = False
    cancelled: bool = False

    @property
    def total(self) -> int:
        return len(self.prompts) * len(self.seeds) * len(self.rows) * len(self.weights)

    def cell(self, prompt: int, row: int, col: int, seed_index: int = 0) -> GridCell | None:
        return self.cells.get((prompt, seed_index, row, col))


def find_run_loras(run_dir: Path | str, output_name: str | None = None) -> list[tuple[str, Path]]:
    """The run's ``{name}-{epoch:06d}`` LoRAs in epoch order, then ``{name}-step{N:08d}`` (saved on stop
    or on request) in step order, then ``{name}`` (the trainer's last epoch, labelled "last" so it is
    not mistaken for ``RUN_DIR/final/``, the epoch the user chose)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"Run folder {run_dir} does not exist.", path=run_dir)
    files = [p for p in run_dir.iterdir() if p.suffix.lower() in LORA_SUFFIXES and p.is_file()]

    def parse(p: Path) -> tuple[str, str, int]:
        for kind, regex in (("epoch", _EPOCH_RE), ("step", _STEP_RE)):
            m = regex.match(p.stem)
            if m:
                return m.group("name"), kind, int(m.group(kind))
        return p.stem, "last", 0

    parsed = [(p, *parse(p)) for p in files]
    names: dict[str, int] = {}
    for _, name, _, _ in parsed:
        names[name] = names.get(name, 0) + 1
    if not names:
        raise UserError(
            f"{run_dir} holds no LoRA files (.safetensors/.ckpt/.pt).",
            path=run_dir,
            hint="Point kazari grid at the training output_dir, or list files with --lora.",
        )
    if output_name is None:
        output_name = max(names, key=lambda n: (names[n], n))
    order = {"epoch": 0, "step": 1, "last": 2}
    mine = sorted((order[kind], number, kind, p) for p, name, kind, number in parsed if name == output_name)
    out = [(kind if kind == "last" else f"{kind} {number}", p) for _, number, kind, p in mine]
    if not out:
        raise UserError(f"{run_dir} has no LoRA named {output_name!r}.", path=run_dir)
    return out


def _as_cancel(cancel: Callable[[], bool] | threading.Event | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _weight_tag(w: float) -> str:
    return f"{w:g}".replace("-", "m")


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def check_weights(weights: Sequence[float]) -> list[float]:
    """LoRA weights for the grid's columns: at least one, each a finite number (NaN renders black
    cells and is not valid JSON)."""
    out = [float(w) for w in weights]
    if not out:
        raise UserError("The grid needs at least one weight.", hint="For example --weights 0,0.5,1.")
    bad = [w for w in out if not math.isfinite(w)]
    if bad:
        raise UserError(f"--weights {','.join(f'{w:g}' for w in out)}: {bad[0]:g} is not a finite number.",
                        hint="Give LoRA weights as plain numbers, e.g. --weights 0,0.4,0.6,0.8,1.")
    return out


def build_grid(
    bundle: SD1Bundle,
    loras: Path | str | Sequence[Path | str] | Sequence[tuple[str, Path]],
    prompts: str | Path | Sequence[str] | Sequence[PromptSpec],
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    seeds: Sequence[int] | None = None,
    out_dir: Path | str | None = None,
    sampler: str = "euler_a",
    steps: int | None = None,
    clip_skip: int | None = None,
    max_token_length: int | None = 75,
    progress: Callable[[int, int, GridCell], None] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    output_name: str | None = None,
) -> GridResult:
    """Render the epoch x weight grid; see the module docstring for files and semantics."""
    rows = _resolve_loras(loras, output_name)
    specs = _resolve_prompts(prompts, steps)
    weights = check_weights(weights)
    seed_list = [int(s) for s in (seeds or [specs[0].seed if specs[0].seed is not None else 1234])]
    out = Path(out_dir) if out_dir is not None else None
    result = GridResult(
        rows=[r[0] for r in rows],
        lora_files=[r[1] for r in rows],
        weights=weights,
        prompts=specs,
        seeds=seed_list,
    )
    is_cancelled = _as_cancel(cancel)
    sampler_obj = Sampler(bundle, sampler=sampler, clip_skip=clip_skip, max_token_length=max_token_length)
    base_cache: dict[tuple[int, int], Any] = {}
    done = 0
    # PNG encoding + fsync run on a writer thread, overlapping the next cell's denoising.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kazari-grid-png")
    pending: list[Future] = []
    failed = True
    try:
        for r, (label, path) in enumerate(rows):
            if is_cancelled():
                raise Cancelled()
            sampler_obj.set_lora(path, weight=1.0)
            for c, w in enumerate(weights):
                for p, spec in enumerate(specs):
                    for si, seed in enumerate(seed_list):
                        cell = GridCell(p, seed, r, c, label, w, path)
                        if w == 0 and (p, si) in base_cache:
                            cell.image, cell.reused = base_cache[(p, si)], True
                        else:
                            cell.image = sampler_obj.generate(spec, seed=seed, weight=w, cancel=is_cancelled)
                            if w == 0:
                                base_cache[(p, si)] = cell.image
                        if out is not None:
                            cell.path = out / "cells" / f"p{p:02d}_s{seed}_{_safe(label)}_w{_weight_tag(w)}.png"
                            pending.append(writer.submit(save_png, cell.image, cell.path))
                        result.cells[(p, si, r, c)] = cell
                        done += 1
                        if progress is not None:
                            progress(done, result.total, cell)
        result.complete = True
        failed = False
    except Cancelled:
        result.cancelled = True
        failed = False
    finally:
        sampler_obj.set_lora(None)  # give the base model back without LoRA hooks
        writer.shutdown(wait=True)
        for f in pending:
            f.result()  # re-raise a failed write (disk full...) here, not silently
        # On an error (e.g. a bad LoRA file) with nothing rendered, write nothing: an empty grid
        # would replace the previous, good grid and index in the same folder.
        if not failed or result.cells:
            _assemble(result, out)
    return result


def _resolve_loras(loras: Any, output_name: str | None) -> list[tuple[str, Path]]:
    if isinstance(loras, str | Path):
        p = Path(loras)
        if p.is_dir():
            return find_run_loras(p, output_name)
        loras = [p]
    rows: list[tuple[str, Path]] = []
    for item in loras:
        if isinstance(item, tuple):
            rows.append((str(item[0]), Path(item[1])))
            continue
        p = Path(item)
        if not p.is_file():
            raise UserError(f"LoRA file {p} does not exist.", path=p, hint="Check the --lora paths.")
        m = _EPOCH_RE.match(p.stem)
        rows.append((f"epoch {int(m.group('epoch'))}" if m else p.stem, p))
    if not rows:
        raise UserError("The grid needs at least one LoRA.", hint="Give a run folder or --lora files.")
    return rows


def _resolve_prompts(prompts: Any, steps: int | None) -> list[PromptSpec]:
    if isinstance(prompts, Sequence) and not isinstance(prompts, str) and prompts and all(
        isinstance(p, PromptSpec) for p in prompts
    ):
        specs = list(prompts)
    else:
        specs = load_prompts(prompts)
    if not specs:
        raise UserError("The grid needs at least one prompt.", hint="Give --prompt TEXT or [sample] sample_prompts.")
    if steps is not None:
        if not 1 <= int(steps) <= 1000:
            raise UserError(f"steps = {steps} is out of range.", hint="Use 1 to 1000 sampling steps (20-30 is usual).")
        specs = [PromptSpec(**{**s.__dict__, "steps": int(steps)}) for s in specs]
    return specs


# ------------------------------------------------------------------------------- layout / files


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def grid_geometry(cell_w: int, cell_h: int, n_rows: int, n_cols: int) -> tuple[int, int, int, int]:
    """(left margin, top margin, width, height) of a labelled grid image."""
    left = max(96, cell_w // 3)
    top = max(48, cell_h // 6)
    return left, top, left + n_cols * cell_w, top + n_rows * cell_h


def render_grid(result: GridResult, prompt: int, seed_index: int = 0) -> Any:
    """The labelled grid image of one (prompt, seed); missing (cancelled) cells stay grey."""
    from PIL import Image, ImageDraw

    spec = result.prompts[prompt]
    cw, ch = spec.width, spec.height
    n_rows, n_cols = len(result.rows), len(result.weights)
    left, top, width, height = grid_geometry(cw, ch, n_rows, n_cols)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(max(12, min(28, ch // 10)))
    small = _font(max(10, min(16, ch // 16)))
    title = spec.prompt if len(spec.prompt) < 90 else spec.prompt[:87] + "..."
    draw.text((4, 2), f"{title}  (seed {result.seeds[seed_index]})", fill=(0, 0, 0), font=small)
    for c, w in enumerate(result.weights):
        draw.text((left + c * cw + cw // 2, top - 4), f"weight {w:g}", fill=(0, 0, 0), font=font, anchor="mb")
    for r, label in enumerate(result.rows):
        draw.text((left // 2, top + r * ch + ch // 2), label, fill=(0, 0, 0), font=font, anchor="mm")
        for c in range(n_cols):
            cell = result.cell(prompt, r, c, seed_index)
            box = (left + c * cw, top + r * ch)
            if cell is not None and cell.image is not None:
                img.paste(cell.image.resize((cw, ch)) if cell.image.size != (cw, ch) else cell.image, box)
            else:
                draw.rectangle([box, (box[0] + cw - 1, box[1] + ch - 1)], fill=(200, 200, 200))
    return img


def _assemble(result: GridResult, out: Path | None) -> None:
    for p in range(len(result.prompts)):
        for si, seed in enumerate(result.seeds):
            grid = render_grid(result, p, si)
            result.grid_images[(p, si)] = grid
            if out is not None:
                grid.info["parameters"] = f"kazari grid: {result.prompts[p].to_line()} (seed {seed})"
                result.grid_paths[(p, si)] = save_png(grid, out / f"grid_p{p:02d}_s{seed}.png")
    if out is None:
        return
    index = {
        "complete": result.complete,
        "cancelled": result.cancelled,
        "rows": [{"label": lab, "lora": str(f)} for lab, f in zip(result.rows, result.lora_files, strict=True)],
        "weights": result.weights,
        "seeds": result.seeds,
        "prompts": [s.to_line() for s in result.prompts],
        "grids": [
            {"prompt": p, "seed": result.seeds[si], "path": str(path.relative_to(out))}
            for (p, si), path in sorted(result.grid_paths.items())
        ],
        "cells": [
            {
                "prompt": c.prompt_index,
                "seed": c.seed,
                "row": c.row,
                "col": c.col,
                "label": c.label,
                "weight": c.weight,
                "lora": str(c.lora) if c.lora else None,
                "path": str(c.path.relative_to(out)) if c.path else None,
            }
            for _, c in sorted(result.cells.items())
        ],
    }
    result.index_path = out / "index.json"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(result.index_path, json.dumps(index, indent=1, allow_nan=False) + "\n")


# ------------------------------------------------------------------------------- one orchestration


@dataclass
class GridSource:
    """What rendering a run's grid needs besides the LoRAs: the base model and text settings.

    The CLI (``kazari grid``, ``kazari judge``) and the Grid screen all build the grid through
    :func:`render_run_grid`, so device choice, dtypes and loading live in this one place.
    """

    model: Path
    vae: Path | None = None
    tokenizer: Path | None = None
    device: str = "auto"
    clip_skip: int | None = None
    max_token_length: int | None = 75
    sampler: str = "euler_a"
    output_name: str | None = None
    use_ema: bool = False  # [model] use_ema: the grid must draw with the U-Net the LoRA was trained on

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> GridSource:
        if cfg.model.pretrained_model is None and overrides.get("model") is None:
            raise UserError("[model] pretrained_model is not set.",
                            hint="Point it at the SD1.x checkpoint the LoRA was trained on.")
        values = dict(model=cfg.model.pretrained_model, vae=cfg.model.vae, tokenizer=cfg.model.tokenizer,
                      device=cfg.training.device, clip_skip=cfg.training.clip_skip,
                      max_token_length=cfg.dataset.max_token_length, sampler=cfg.sample.sample_sampler,
                      output_name=cfg.output.output_name, use_ema=cfg.model.use_ema)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def pick_device(device: str) -> tuple[str, Any]:
    """``auto|cuda|cpu`` -> (device, weight dtype); fp16 on CUDA, fp32 on CPU (trainer.device's rule)."""
    import torch

    from trainer.device import resolve_device

    device = resolve_device(device, key="device").type
    return device, (torch.float16 if device == "cuda" else torch.float32)


def load_base(source: GridSource) -> SD1Bundle:
    import torch

    from trainer.models import load_sd1

    device, dtype = pick_device(source.device)
    # The VAE stays fp32: fp16 SD VAEs overflow into NaN (black) images.
    return load_sd1(source.model, vae=source.vae, tokenizer=source.tokenizer, dtype=dtype, device=device,
                    vae_dtype=torch.float32, use_ema=source.use_ema)


def keep_previous_grid(out_dir: Path) -> Path | None:
    """Move an earlier grid in ``out_dir`` to the next free ``<name>-N`` beside it (never overwrite)."""
    out_dir = Path(out_dir)
    if not (out_dir / "index.json").is_file():
        return None
    n = 1
    while (dest := out_dir.with_name(f"{out_dir.name}-{n}")).exists():
        n += 1
    out_dir.rename(dest)
    return dest


def render_run_grid(
    source: GridSource,
    loras: Any,
    prompts: Any,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    seeds: Sequence[int] | None = None,
    out_dir: Path | None = None,
    steps: int | None = None,
    progress: Callable[[int, int, GridCell], None] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    keep_previous: bool = True,
    bundle: SD1Bundle | None = None,
) -> GridResult:
    """Load the base model (unless ``bundle``) and build the grid; an earlier grid in ``out_dir`` is
    kept as ``<out_dir>-N`` when ``keep_previous``."""
    bundle = bundle or load_base(source)
    if out_dir is not None and keep_previous:
        keep_previous_grid(out_dir)
    return build_grid(bundle, loras, prompts, weights=weights, seeds=seeds, out_dir=out_dir,
                      sampler=source.sampler, steps=steps, clip_skip=source.clip_skip,
                      max_token_length=source.max_token_length, progress=progress, cancel=cancel,
                      output_name=source.output_name)
