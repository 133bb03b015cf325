"""``cerm view``: a static site for reading a run's criteria and judgments (see docs/ and the README)."""

from cerm.view.loaders import RunView, ViewError, load
from cerm.view.render import SiteStats, build_site

__all__ = ["RunView", "SiteStats", "ViewError", "build_site", "load"]
