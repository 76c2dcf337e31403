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
