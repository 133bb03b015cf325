"""The embedded model's loads are quiet: one plumbing warning per process, no GGUF conversion bar."""

from __future__ import annotations

import logging

from cerm.backends import embedded


def test_warning_once_per_process(caplog, monkeypatch):
    monkeypatch.setattr(embedded, "_warned", False)
    with caplog.at_level(logging.WARNING, "cerm.backends.embedded"):
        embedded.warn_embedded()
        embedded.warn_embedded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "plumbing model" in lines[0] and not lines[0].startswith("WARNING")


def test_gguf_conversion_bar_is_hidden(capfd):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    with embedded.quiet_gguf_conversion():
        for _ in gguf_utils.tqdm(range(50), desc="Converting and de-quantizing GGUF tensors..."):
            pass
    assert "Converting" not in capfd.readouterr().err
    for _ in gguf_utils.tqdm(range(2), desc="restored"):  # the library's own bar is back afterwards
        pass
    assert "restored" in capfd.readouterr().err
