"""How the harness starts Python children: isolated, importing this installation's code and nothing else.

`python -m` puts the working directory first on sys.path: a harness (root) started from /tmp, where anyone may
plant `/tmp/ctypes/__init__.py`, would run that file as root. Children start with `-I` instead (no working
directory, no PYTHON* variables, no user site-packages on sys.path) and put the directory this code was loaded
from first, so that they run exactly the harness's own code, installed or in a checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The directory that holds the `devices`, `harness` and `workloads` packages this process imported.
CODE_ROOT = str(Path(__file__).resolve().parent.parent)
#: `python -I -c BOOT ROOT MODULE ARGS...` runs MODULE as `python -m MODULE ARGS...` would, ROOT first on sys.path.
BOOT = (
    "import runpy, sys; sys.path.insert(0, sys.argv[1]); module = sys.argv[2]; del sys.argv[1:3]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)
#: The working directory of the harness's root children: nothing there is imported, and nothing is written.
SAFE_CWD = "/"


def module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args...`, isolated (see the module's docstring)."""
    return [sys.executable, "-I", "-c", BOOT, CODE_ROOT, module, *args]


def code_argv(code: str, *args: str) -> list[str]:
    """`python -c code args...`, isolated, with this installation's code importable."""
    return [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {CODE_ROOT!r})\n{code}", *args]
