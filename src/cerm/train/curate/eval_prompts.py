"""The prompts of evaluation sets, which curated training pairs must not share (``--decontaminate``)."""

from __future__ import annotations

import logging
from pathlib import Path

from cerm.io import read_rows
from cerm.prompts import render_query
from cerm.train.pairs import source_files

logger = logging.getLogger(__name__)

PROMPT_FIELDS = ("prompt", "question", "conversation_input", "turns")


def load_prompts(source: str | Path) -> list[str]:
    """Every prompt in a benchmark file or directory (fields: prompt, question, conversation_input, turns).

    In a directory, files whose first row has no prompt field (e.g. Arena-Hard's model answers) are skipped
    with a warning; a named file must hold prompts. A row that cannot be read is an error: a prompt we
    cannot read cannot be decontaminated against.
    """
    out = []
    path = Path(source)
    for f in source_files(path):
        for k, row in enumerate(read_rows(f)):
            if row.error is not None:
                raise row.error
            assert row.data is not None
            field = next((name for name in PROMPT_FIELDS if row.data.get(name)), None)
            if field is None and path.is_dir() and k == 0:
                logger.warning("%s: no prompt field in its first row; skipped for decontamination", f)
                break
            if field is None:
                raise ValueError(f"{row.where}: no prompt field (looked for {', '.join(PROMPT_FIELDS)}).")
            value = row.data[field]
            if field == "turns":  # arena-hard v0.1 style: [{"content": ...}]
                value = "\n".join(t.get("content", "") for t in value if isinstance(t, dict))
            try:
                out.append(render_query(value) if not isinstance(value, str) else value)
            except ValueError as e:
                raise ValueError(f"{row.where}: field {field!r}: {e}") from None
    return out
