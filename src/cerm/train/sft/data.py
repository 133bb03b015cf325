"""SFT rows: the CE-RM training conversations `cerm distill` writes and `cerm train sft` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

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
        return [{"role": m.role, "content": m.content} for m in self.messages]


SFT_ROLES = ["user", "assistant", "user", "assistant"]


def load_sft_rows(path: str | Path) -> list[SFTRow]:
    """Read SFT rows; the first bad row raises ``ValueError`` naming file, line and field."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = SFTRow.model_validate_json(line)
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(x) for x in err["loc"]) or "<line>"
                raise ValueError(f"{path}:{lineno}: field {field!r}: {err['msg']}") from None
            roles = [m.role for m in row.messages]
            if roles != SFT_ROLES:
                raise ValueError(f"{path}:{lineno}: field 'messages': roles {roles} must be {SFT_ROLES}.")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no SFT rows; run `cerm distill` first.")
    return rows
