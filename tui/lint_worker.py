"""Child-process entry for linting a big dataset: ``python -m tui.lint_worker ROOT EXT [REG_ROOT [MIN_SIZE]]``.

Writes the pickled list of ``tagging.lint.Finding`` to stdout. Run by ``Session.run_lint`` so the
image decoding happens outside the UI's interpreter (no GIL contention). No Textual here.
"""

from __future__ import annotations

import pickle
import sys


def main(argv: list[str]) -> int:
    from tagging.dataset import Dataset
    from tagging.lint import DEFAULT_MIN_SIZE, lint

    root, caption_ext = argv[0], argv[1]
    reg_root = argv[2] if len(argv) > 2 and argv[2] else None
    min_size = int(argv[3]) if len(argv) > 3 else DEFAULT_MIN_SIZE
    findings = list(lint(Dataset.open(root, caption_ext=caption_ext, reg_root=reg_root), min_size=min_size))
    sys.stdout.buffer.write(pickle.dumps(findings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
