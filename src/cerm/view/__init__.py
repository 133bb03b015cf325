"""``cerm view``: a static site for reading a run's criteria and judgments (see the README, "Viewing runs").

It reads the files that ``cerm bench run``, ``cerm probe`` and ``cerm score|bon -o`` write; it never runs a
model. May import: cerm core (parsing) only; never bench, reward, train, backends or the CLI.
"""

from cerm.view.loaders import RunView, ViewError, load
from cerm.view.render import SiteStats, build_site

__all__ = ["RunView", "SiteStats", "ViewError", "build_site", "load"]
