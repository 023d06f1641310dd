"""The test suite leaves the user's environment alone: a test that pip-installs a fixture does
so into a private ``--target`` directory (the ``private_install`` fixture), never into the
environment running the tests (where it would show up in `lite plugins` afterwards)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIP_INSTALL = re.compile(r"""["']pip["']\s*,\s*["']install["']""")


def test_tests_never_pip_install_into_the_running_environment():
    offenders = []
    for path in sorted(ROOT.glob("**/tests/**/*.py")):
        if ".xfer" in path.parts or "site-packages" in path.parts:
            continue
        text = path.read_text()
        for m in PIP_INSTALL.finditer(text):
            call = text[m.start():text.find(")", m.end())]  # the rest of the argument list
            if "--target" not in call:
                offenders.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}")
    assert not offenders, f"pip install without --target: {', '.join(offenders)}"
