r"""CE-RM prompt templates and the two-turn message layout (docs/protocol.md §2, §4).

The templates ship as package data, byte-identical to the published prompts (docs/protocol.md §4). They are filled with ``str.replace``,
never ``str.format``: ``$\boxed{}$`` is literal text and user text may contain braces.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from cerm.types import Message, Query

CRITERIA_SHA256 = "e4d87e465d2dae3d90bc487d17587b25233e32df2ec8dfec4b024001dba0d122"
EVALUATION_SHA256 = "164267b6fb7152535ac9e8e2a9027557e6f58e02d14bd50400629edb797c8cae"

# Bump the suffix whenever anything that shapes the model input changes (templates, multi-turn
# rendering); it enters every cache key, so old cached criteria/judgments are never reused by mistake.
PROMPT_VERSION = f"ce-rm-{CRITERIA_SHA256[:8]}-{EVALUATION_SHA256[:8]}-mt1"

MULTI_TURN_FORMAT = "mt1"


@cache
def load_template(name: str) -> str:
    """Return the template ``criteria`` or ``evaluation`` exactly as shipped."""
    if name not in ("criteria", "evaluation"):
        raise ValueError(f"unknown template {name!r}; expected 'criteria' or 'evaluation'.")
    data = resources.files("cerm").joinpath("prompts_data", f"{name}.txt").read_bytes()
    expected = CRITERIA_SHA256 if name == "criteria" else EVALUATION_SHA256
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"prompt file {name}.txt does not match its sha256; the installation is corrupt.")
    return data.decode("ascii")


def render_query(query: Query) -> str:
    """Turn a query into the text for the ``{query}`` slot.

    A string is inserted raw. A chat history must end with a user message; a single user message is
    inserted as its content. Longer histories use our format ``mt1`` [R]: each earlier message as a
    ``[Role]`` header line followed by its content, separated by blank lines, then the final user turn
    under ``[Current User Turn]``. The response being judged answers that final turn.
    """
    if isinstance(query, str):
        return query
    if not query:
        raise ValueError("query is an empty message list; give at least one user message.")
    for i, msg in enumerate(query):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f"query message {i} must be a dict with 'role' and 'content'; got {msg!r:.80}")
        if not isinstance(msg["content"], str):
            raise ValueError(f"query message {i} has non-string content ({type(msg['content']).__name__}).")
    if query[-1]["role"] != "user":
        raise ValueError(f"the last query message must be from the user; got role {query[-1]['role']!r}.")
    if len(query) == 1:
        return query[0]["content"]
    history = "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in query[:-1])
    return f"{history}\n\n[Current User Turn]\n{query[-1]['content']}"


def criteria_prompt(query_text: str) -> str:
    """The criteria prompt (turn 1) with ``{query}`` filled in."""
    return load_template("criteria").replace("{query}", query_text, 1)


def evaluation_prompt(response: str) -> str:
    """The evaluation prompt (turn 2) with ``{response}`` filled in."""
    return load_template("evaluation").replace("{response}", response, 1)


def criteria_messages(query_text: str) -> list[Message]:
    """Turn 1: the criteria prompt alone (no system message, protocol §1)."""
    return [{"role": "user", "content": criteria_prompt(query_text)}]


def evaluation_messages(query_text: str, criteria_text: str, response: str) -> list[Message]:
    """Turn 2: criteria prompt, the whole criteria generation fed back verbatim, evaluation prompt."""
    return [
        {"role": "user", "content": criteria_prompt(query_text)},
        {"role": "assistant", "content": criteria_text},
        {"role": "user", "content": evaluation_prompt(response)},
    ]
