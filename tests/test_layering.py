"""The domain packages must stay free of the UI (harlequin-style layering)."""

import subprocess
import sys


def test_domain_packages_do_not_import_textual() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import tagging, trainer\n"
        "for pkg in (tagging, trainer):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"textual imported by domain packages: {out.stdout}"


def test_tagging_does_not_import_torch() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import tagging\n"
        "for m in pkgutil.walk_packages(tagging.__path__, 'tagging.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_headless_commands_never_import_textual(tmp_path) -> None:
    """Each headless command, parser and run path, leaves Textual unimported (`accelerate launch` too)."""
    ds = tmp_path / "ds" / "2_kazari"
    ds.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(ds / "a.png")
    (ds / "a.txt").write_text("kazari, 1girl\n")
    cfg = tmp_path / "k.toml"
    runs = [
        ["dataset", "info", str(ds.parent)],
        ["dataset", "lint", str(ds.parent)],
        ["config", "new", "-o", str(cfg)],
        ["config", "check", str(cfg)],
        ["train", str(cfg)],
        ["grid", str(cfg)],
        ["tag", str(tmp_path / "missing")],
    ]
    code = (
        "import sys, json\n"
        "from tui.cli import main\n"
        "codes = []\n"
        f"for argv in {runs!r}:\n"
        "    try:\n"
        "        codes.append(main(argv))\n"
        "    except SystemExit as exc:\n"
        "        codes.append(exc.code)\n"
        "bad = sorted(n for n in sys.modules if n == 'textual' or n.startswith('textual.'))\n"
        "print(json.dumps({'codes': codes, 'textual': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["textual"] == [], result
    # The runs really ran: info/lint/new succeed; the rest stop on user errors (no model, no dataset).
    assert result["codes"][:3] == [0, 0, 0], (result, out.stderr)
    assert all(c in (0, 1, 2) for c in result["codes"]), (result, out.stderr)
