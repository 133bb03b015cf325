"""What each command needs beyond the core, checked before it does any work.

A command whose extra is missing fails at once with the install line, never with a traceback after the work
(``cerm bench run`` once judged every item, then died on ``import matplotlib``). Plots are the exception:
without matplotlib the outputs are written all the same and the plots skipped, with one warning up front.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from cerm.cli.common import console, fail


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not blocked), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent missing, or a module set to None in sys.modules
        return False


def require(what: str, extra: str, modules: Iterable[str]) -> None:
    """Fail before any work if ``modules`` do not all import, naming the extra that brings them."""
    missing = [m for m in modules if not is_installed(m)]
    if missing:
        raise fail(f"{what} needs {', '.join(missing)}: pip install 'cerm[{extra}]'")


def warn_without_plots(what: str, extra: str) -> None:
    """One line up front when matplotlib is missing: the run goes on and skips only its plots."""
    if not is_installed("matplotlib"):
        console.print(f"[yellow]warning:[/] matplotlib is not installed, so {what} gets no plots "
                      f"(pip install 'cerm\\[{extra}]'); everything else is written.", soft_wrap=True)


TRAIN_MODULES = ("torch", "transformers", "accelerate", "peft", "trl")  # what `cerm train sft|rl` imports
