"""Model backends behind one protocol; engines are imported lazily by ``get_backend``.

Concern: chat prompts in, ``Generation``s out, batched the engine's own way (hf, vllm, openai, llamacpp, fake).
May import: the core's types and helpers (``cerm.types``, ``cerm.retry``) and ``base``/``embedded``; never the
judge, ``bench``, ``reward``, ``train`` or ``cli``. Nothing outside this package imports an engine module.
"""

from cerm.backends.base import BACKENDS, DEFAULT_MODEL, Backend, get_backend
from cerm.backends.embedded import EMBEDDED, EMBEDDED_WARNING

__all__ = ["BACKENDS", "DEFAULT_MODEL", "EMBEDDED", "EMBEDDED_WARNING", "Backend", "get_backend"]
