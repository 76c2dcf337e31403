"""sd-scripts sample-prompt syntax: ``prompt --n negative --w 512 --h 768 --s 28 --l 7 --d 1234``.

API (stable)::

    spec = parse_prompt_line(line, defaults=None, where="")   # -> PromptSpec (UserError on bad values)
    specs = load_prompts(lines_or_path, defaults=None)        # list[str] | path to a .txt file
    PromptSpec(prompt, negative_prompt="", width=512, height=512, steps=30, cfg_scale=7.5,
               seed=None, sampler=None, multiplier=None)
    spec.to_line()                                            # back to the sd-scripts syntax

Options (sd-scripts ``line_to_prompt_dict``): ``--n`` negative prompt, ``--w``/``--h`` size (rounded
down to a multiple of 8, at least 64, at most 2048), ``--s`` steps (1..1000), ``--l`` CFG scale, ``--d`` seed,
``--ss`` sampler, ``--am`` LoRA multiplier (``--cn``/``--f``/``--g``/``--fs``, meant for other
model families, are skipped). Options are split on `` --``; text before the first one is
the prompt. Lines that are empty or start with ``#`` are skipped in files and lists. Defaults follow
sd-scripts (512x512, 30 steps, CFG 7.5, random seed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tagging.errors import UserError


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.5
    seed: int | None = None
    sampler: str | None = None
    multiplier: float | None = None

    def to_line(self) -> str:
        parts = [self.prompt]
        if self.negative_prompt:
            parts.append(f"--n {self.negative_prompt}")
        parts += [f"--w {self.width}", f"--h {self.height}", f"--s {self.steps}", f"--l {self.cfg_scale:g}"]
        if self.seed is not None:
            parts.append(f"--d {self.seed}")
        if self.sampler:
            parts.append(f"--ss {self.sampler}")
        if self.multiplier is not None:
            parts.append(f"--am {self.multiplier:g}")
        return " ".join(parts)


_OPTIONS: dict[str, tuple[str, str]] = {
    # option -> (field, kind)
    "n": ("negative_prompt", "text"),
    "w": ("width", "size"),
    "h": ("height", "size"),
    "s": ("steps", "steps"),
    "l": ("cfg_scale", "float"),
    "d": ("seed", "int"),
    "ss": ("sampler", "text"),
    "am": ("multiplier", "float"),
}
# Options sd-scripts (and its sibling musubi-tuner) define for other model families: ControlNet image,
# frame count, guidance scale, flow shift. They mean nothing for an SD1 preview, but a prompt file
# shared with those trainers must still load, as it does in sd-scripts (which skips what it ignores).
_IGNORED = {"cn", "f", "g", "fs"}


# Largest preview side: SD1 is trained at 512, and the VAE decode alone needs ~0.75 GiB per megapixel
# (fp32 activations), so 100000 px (a typo) would run for hours or fail out of memory.
MAX_SIZE = 2048


def decode_memory_gib(width: int, height: int) -> float:
    """Rough peak memory of the SD VAE decoding one ``width`` x ``height`` image (128-channel fp32
    activations at full size, about three alive at once)."""
    return width * height * 128 * 4 * 3 / 2**30


def _fail(where: str, msg: str) -> UserError:
    return UserError(
        f"{where}: {msg}.".lstrip(": "),
        hint="Prompt lines use sd-scripts syntax: `prompt --n negative --w 512 --h 512 --s 28 --l 7 --d 1234`.",
    )


def parse_prompt_line(line: str, defaults: PromptSpec | None = None, where: str = "") -> PromptSpec:
    """Parse one prompt line; ``defaults`` supplies values the line leaves out."""
    where = where or f"prompt {line[:40]!r}"
    parts = line.strip().split(" --")
    prompt = parts[0].strip()
    if prompt.startswith("--"):
        parts = ["", *line.strip()[2:].split(" --")]
        prompt = ""
    # PromptSpec field -> value; each option's kind in _OPTIONS gives the field's own type
    values: dict[str, Any] = {}
    for raw in parts[1:]:
        m = re.match(r"([a-zA-Z]+)(?:\s+(.*))?$", raw.strip(), re.DOTALL)
        if not m:
            raise _fail(where, f"cannot read option `--{raw.strip()}`")
        opt, arg = m.group(1).lower(), (m.group(2) or "").strip()
        if opt in _IGNORED:
            continue
        if opt not in _OPTIONS:
            raise _fail(where, f"unknown option `--{opt}` (known: {', '.join('--' + o for o in _OPTIONS)})")
        field, kind = _OPTIONS[opt]
        try:
            if kind == "text":
                values[field] = arg
            elif kind == "float":
                values[field] = float(arg)
            elif kind == "int":
                values[field] = int(arg)
            elif kind == "steps":
                values[field] = max(1, min(1000, int(arg)))
            else:  # size: SD needs multiples of 8 (the VAE factor); sd-scripts rounds down the same way
                size = max(64, int(arg) - int(arg) % 8)
                values[field] = size
                if size > MAX_SIZE:
                    raise _fail(where, f"`--{opt} {arg}` is too large: at most {MAX_SIZE} pixels a side (SD1 "
                                f"works at 512-768; one {arg}x512 image needs about "
                                f"{decode_memory_gib(int(arg), 512):.0f} GiB of memory to decode)")
        except ValueError:
            raise _fail(where, f"`--{opt} {arg}` needs a {'number' if kind != 'int' else 'whole number'}") from None
    if not prompt:
        raise _fail(where, "the prompt text is empty")
    base = defaults or PromptSpec(prompt="")
    return replace(base, prompt=prompt, **values)


def load_prompts(source: str | Path | Sequence[str], defaults: PromptSpec | None = None) -> list[PromptSpec]:
    """Prompt specs from a list of lines or a ``.txt`` prompt file (comments and blanks skipped)."""
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"Prompt file {path} does not exist.", path=path, hint="Fix [sample] sample_prompts.")
        if path.suffix.lower() not in (".txt", ""):
            raise UserError(
                f"Prompt file {path} is not a .txt file.",
                path=path,
                hint="Write one prompt per line in sd-scripts syntax in a .txt file.",
            )
        lines = path.read_text(encoding="utf-8").splitlines()
        label = str(path)
    else:
        lines = [source] if isinstance(source, str) else list(source)
        label = "sample_prompts"
    specs = []
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        specs.append(parse_prompt_line(line, defaults, where=f"{label} line {i}"))
    return specs


def _looks_like_path(text: str) -> bool:
    if "\n" in text or " --" in text:
        return False
    if text.strip().lower().endswith(".txt"):
        return True
    try:
        return Path(text).expanduser().is_file()
    except OSError:  # e.g. a long prompt is not a valid file name
        return False


PROMPT_FIELDS = tuple(f.name for f in fields(PromptSpec))
