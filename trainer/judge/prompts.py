"""The evaluation prompts: the trigger alone, then the trigger plus things the dataset never shows.

A prompt line may use ``{trigger}``; its *asked* tags are its comma-separated tags minus the
trigger and the character's features, kept only when the tagger knows them (``masterpiece`` is
no tag a tagger can find). A prompt with no asked tags measures feature recall; the others
measure adherence and leakage.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from tagging.errors import UserError
from tagging.tagger.select import normalise
from trainer.prompts import PromptSpec, parse_prompt_line

# Candidates, in order: the first one the training captions never mention is used.
OUTFITS = ("school_uniform", "bikini", "maid", "kimono", "armor", "swimsuit")
PLACES = ("beach", "forest", "night", "classroom", "city")
POSES = ("from_behind", "sitting", "lying", "from_side")
# Quality words of anime prompts: no tagger tag, and no request the picture can fail.
QUALITY = frozenset({"masterpiece", "best_quality", "high_quality", "good_quality", "amazing_quality",
                     "normal_quality", "low_quality", "worst_quality", "very_aesthetic", "aesthetic",
                     "absurdres", "highres", "newest", "detailed"})


@dataclass(frozen=True)
class EvalPrompt:
    spec: PromptSpec
    asked: tuple[str, ...]  # what the tagger must find beyond the character
    unmeasured: tuple[str, ...] = ()  # asked for, but the tagger has no such tag

    @property
    def scored_asked(self) -> tuple[str, ...] | None:
        """What scoring uses: None for a prompt that asks only for things the tagger cannot see (it
        is neither a trigger-only prompt nor measurable for adherence)."""
        return None if self.unmeasured and not self.asked else self.asked


def _first_unseen(candidates: Sequence[str], seen: Collection[str]) -> str:
    return next((c for c in candidates if c not in seen), candidates[0])


def default_prompt_lines(caption_tags: Collection[str] = ()) -> list[str]:
    """Trigger alone; + an outfit; + a place; + a pose — each one the captions never show."""
    seen = {normalise(t) for t in caption_tags}
    return [
        "{trigger}",
        f"{{trigger}}, {_first_unseen(OUTFITS, seen)}",
        f"{{trigger}}, {_first_unseen(PLACES, seen)}",
        f"{{trigger}}, {_first_unseen(POSES, seen)}",
    ]


def positive_tags(prompt: str) -> list[str]:
    """The prompt's tags (A1111 weights and ``<lora:...>`` dropped), normalised."""
    out = []
    for part in prompt.split(","):
        tag = part.strip().strip("()[]{}")
        if ":" in tag and not tag.startswith("<"):
            tag = tag.rsplit(":", 1)[0].strip("() ")  # (tag:1.2)
        if tag and not tag.startswith("<"):
            out.append(normalise(tag.replace("\\(", "(").replace("\\)", ")")))
    return out


def _read_prompt_file(path: Path) -> list[str]:
    """Raw lines (``{trigger}`` and missing options kept for later), comments and blanks skipped."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"Cannot read the evaluation prompt file {path}: {err}.", path=path,
                        hint="Give a UTF-8 .txt file with one prompt per line (--prompts or [judge] prompts).") from None
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def build_eval_prompts(
    lines: Sequence[str] | str | Path,
    trigger: str,
    features: Collection[str],
    known_tags: Collection[str] | None,
    defaults: PromptSpec | None = None,
) -> list[EvalPrompt]:
    """Parse the prompt lines (sd-scripts syntax, ``{trigger}`` substituted)."""
    if isinstance(lines, (str, Path)):
        raw = _read_prompt_file(Path(lines))
    else:
        raw = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if any("{trigger}" in line for line in raw) and not trigger:
        raise UserError(
            "The evaluation prompts use {trigger}, but no trigger word is known for this dataset.",
            hint="Set it with `kazari dataset character ROOT --trigger WORD`, or pass --trigger WORD.",
        )
    known = None if known_tags is None else {normalise(t) for t in known_tags}
    drop = {normalise(trigger), *(normalise(f) for f in features)}
    out = []
    for i, line in enumerate(raw):
        spec = parse_prompt_line(line.replace("{trigger}", trigger), defaults, where=f"evaluation prompt {i + 1}")
        beyond = [t for t in positive_tags(spec.prompt) if t not in drop and t not in QUALITY]
        asked = [t for t in beyond if known is None or t in known]
        unmeasured = [t for t in beyond if t not in asked]
        out.append(EvalPrompt(spec, tuple(dict.fromkeys(asked)), tuple(dict.fromkeys(unmeasured))))
    if not out:
        raise UserError("No evaluation prompt to judge with.", hint="Set [judge] prompts or leave it empty for the defaults.")
    return out
