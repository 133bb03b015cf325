"""SFT rows: the CE-RM training conversations `cerm distill` writes and `cerm train sft` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cerm.io import DataError, read_models
from cerm.train.pairs import _MessageIn
from cerm.types import Message


class SFTRow(BaseModel):
    """One CE-RM training conversation.

    The turns are [user criteria prompt, assistant criteria, user evaluation prompt, assistant evaluation].
    ``train_criteria=False`` keeps the criteria turn out of the loss: a pair's two
    conversations share it, and it is trained in only one of them (docs/training.md §2).
    """

    model_config = ConfigDict(extra="forbid")
    id: str
    pair_id: str
    response_role: Literal["chosen", "rejected"]
    messages: list[_MessageIn]
    train_criteria: bool
    score: float
    partner_score: float
    teacher: str
    prompt_version: str
    source: str = ""
    domain: str = "chat"

    def message_dicts(self) -> list[Message]:
        """The messages as plain ``{role, content}`` dicts."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


SFT_ROLES = ["user", "assistant", "user", "assistant"]


def load_sft_rows(path: str | Path) -> list[SFTRow]:
    """Read SFT rows; the first bad row raises ``DataError`` naming file, line and field."""
    rows = []
    for where, row in read_models(path, SFTRow):
        roles = [m.role for m in row.messages]
        if roles != SFT_ROLES:
            raise DataError.at(where, "messages", f"roles {roles} must be {SFT_ROLES}.")
        rows.append(row)
    if not rows:
        raise DataError.at(str(path), None, "no SFT rows; run `cerm distill` first.")
    return rows
