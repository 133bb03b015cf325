"""Model backends behind one protocol; engines are imported lazily by ``get_backend``."""

from cerm.backends.base import BACKENDS, DEFAULT_MODEL, Backend, get_backend
from cerm.backends.embedded import EMBEDDED, EMBEDDED_WARNING

__all__ = ["BACKENDS", "DEFAULT_MODEL", "EMBEDDED", "EMBEDDED_WARNING", "Backend", "get_backend"]
