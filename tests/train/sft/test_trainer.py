"""`cerm train sft`: assistant-only loss masks (token by token), a few real steps on a tiny random Qwen3,
and the checkpoint judging through the hf backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.judge import Judge, JudgeConfig
from cerm.train.pairs import PreferencePair
from cerm.train.sft.config import SFTRunConfig
from cerm.train.sft.data import SFTRow, load_sft_rows
from cerm.train.sft.distill import distill

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def _rows(tmp_path: Path, n: int = 3) -> Path:
    """Real SFT rows: the scripted teacher's traces through `distill` (chosen 8, rejected 3)."""
    pairs = [PreferencePair(f"p{i}", f"Question {i}: what is {i} + {i}?", f"It is {2 * i}.", f"It is {2 * i + 1}.")
             for i in range(n)]

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        answer = int(re.search(r"It is (\d+)\.", messages[-1]["content"]).group(1))
        return canned_evaluation(8 if answer % 2 == 0 else 3)  # the even answers are right

    out = tmp_path / "sft.jsonl"
    res = distill(pairs, Judge(FakeBackend("teacher", script)), out)
    assert res.kept == n
    return out


def _assistant_char_spans(text: str, contents: list[str]) -> list[tuple[int, int]]:
    """Independent of the code under test: each assistant content plus its ChatML <|im_end|>."""
    spans, pos = [], 0
    for content in contents:
        start = text.index("<|im_start|>assistant\n" + content, pos) + len("<|im_start|>assistant\n")
        end = text.index("<|im_end|>", start + len(content)) + len("<|im_end|>")
        assert end == start + len(content) + len("<|im_end|>")
        spans.append((start, end))
        pos = end
    return spans


@pytest.mark.parametrize("train_criteria", [True, False])
def test_masks_cover_only_assistant_tokens(smollm2_tokenizer: Path, tmp_path: Path, train_criteria: bool) -> None:
    from transformers import AutoTokenizer

    from cerm.train.sft.trainer import build_example, trained_turns

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer)
    row = load_sft_rows(_rows(tmp_path, 1))[0 if train_criteria else 1]
    assert row.train_criteria is train_criteria
    messages = row.message_dicts()
    ex = build_example(tok, messages, trained_turns(row))
    text = tok.apply_chat_template(messages, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert ex.input_ids == enc["input_ids"]
    criteria_span, eval_span = _assistant_char_spans(text, [messages[1]["content"], messages[3]["content"]])
    trained = [eval_span] + ([criteria_span] if train_criteria else [])
    for t, ((start, end), m) in enumerate(zip(enc["offset_mapping"], ex.assistant_masks, strict=True)):
        inside = any(s <= start and end <= e for s, e in trained)
        assert m == int(inside), f"token {t} {text[start:end]!r}: mask {m}"
    kept = tok.decode([i for i, m in zip(ex.input_ids, ex.assistant_masks, strict=True) if m])
    expect = (messages[1]["content"] + "<|im_end|>" if train_criteria else "") + messages[3]["content"] + "<|im_end|>"
    assert kept == expect
    # user turns, the system prompt and role headers never count
    assert "[Start of Response]" not in kept and "assistant\n" not in kept


def test_template_that_rewrites_history_is_refused(smollm2_tokenizer: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from cerm.train.sft.trainer import build_example, trained_turns

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer)
    # like Qwen3's hybrid template: earlier assistant turns rendered differently from the last one
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and not loop.last"
                         " %}[old]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    row = load_sft_rows(_rows(tmp_path, 1))[0]
    with pytest.raises(ValueError, match="not prefix-preserving at message 1"):
        build_example(tok, row.message_dicts(), trained_turns(row))


def test_recipes_load() -> None:
    paper = SFTRunConfig.from_sources(RECIPES / "ce-rm-4b-sft.yaml")
    assert (paper.model, paper.batch_size, paper.learning_rate, paper.epochs) == (
        "Qwen/Qwen3-4B-Instruct-2507", 64, 1e-5, 3.0)
    assert paper.gradient_accumulation_steps(8) == 8 and paper.gradient_accumulation_steps(1) == 64
    lora = SFTRunConfig.from_sources(RECIPES / "sft" / "ce-rm-4b-lora.yaml")
    assert lora.use_lora and lora.batch_size == 64
    with pytest.raises(ValueError, match="train_data is empty"):
        SFTRunConfig.from_sources(RECIPES / "sft" / "tiny-cpu.yaml", ["model=x"])
    with pytest.raises(ValueError, match=r"override 'lr=1': unknown key 'lr'"):
        SFTRunConfig.from_sources(RECIPES / "ce-rm-4b-sft.yaml", ["lr=1"])
    with pytest.raises(ValueError, match="multiple of per_device_batch_size"):
        SFTRunConfig.from_sources(RECIPES / "ce-rm-4b-sft.yaml", ["batch_size=10"]).gradient_accumulation_steps(3)
    assert SFTRunConfig.from_sources(RECIPES / "ce-rm-4b-sft.yaml", ["save_strategy=no"]).save_strategy == "no"
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for f in sorted((RECIPES / "accelerate").glob("*.yaml")):
        kinds[f.stem] = load_config_from_file(str(f)).distributed_type.value
    assert kinds == {"ddp": "MULTI_GPU", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED",
                     "fsdp": "FSDP"}


def _tiny_cfg(tiny_model_dir: Path, rows: Path, out: Path, **kw) -> SFTRunConfig:
    overrides = [f"model={tiny_model_dir}", f"train_data={rows}", f"output_dir={out}", *[f"{k}={v}" for k, v in kw.items()]]
    return SFTRunConfig.from_sources(RECIPES / "sft" / "tiny-cpu.yaml", overrides)


def test_collator_labels_follow_the_masks(tiny_model_dir: Path, tmp_path: Path) -> None:
    from cerm.train.sft.trainer import build_trainer

    prep = build_trainer(_tiny_cfg(tiny_model_dir, _rows(tmp_path, 2), tmp_path / "run"))
    dataset = prep.trainer.train_dataset  # TRL folds our assistant_masks into a labels column
    examples = [dataset[i] for i in range(len(dataset))]
    assert len(examples) == len(prep.train.examples) == 4
    batch = prep.trainer.data_collator(examples)
    ours = {tuple(e.input_ids): e.assistant_masks for e in prep.train.examples}  # the dataset is shuffled
    for b, ex in enumerate(examples):
        n = len(ex["input_ids"])
        mask = ours[tuple(ex["input_ids"])]
        ids = batch["input_ids"][b].tolist()
        labels = batch["labels"][b].tolist()
        # right padding: the example first, then padding that never counts
        assert ids[:n] == ex["input_ids"] and all(v == -100 for v in labels[n:])
        for t in range(n):
            want = ids[t] if mask[t] else -100
            assert labels[t] == want, f"example {b} token {t}"
        assert 0 < sum(v != -100 for v in labels) < n


def test_sft_tiny_qwen3_trains_and_judges(tiny_model_dir: Path, tmp_path: Path) -> None:
    from cerm.backends.hf import HFBackend
    from cerm.train.sft.trainer import train_sft

    rows = _rows(tmp_path, 1)  # 2 conversations of ~650 tokens; one per step
    cfg = _tiny_cfg(tiny_model_dir, rows, tmp_path / "run", max_steps=4, batch_size=1, learning_rate=3e-3)
    result = train_sft(cfg)
    assert result.steps == 4 and len(result.losses) == 4
    assert result.losses[-1] < result.losses[0] - 0.3, result.losses
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["trained_tokens"] > 0 and run["teachers"] == ["fake:teacher"]
    backend = HFBackend(str(tmp_path / "run" / "final"), dtype="float32")
    judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=8, eval_max_new_tokens=8))
    judgments = judge.score("What is 2 + 2?", ["4", "5"])
    assert len(judgments) == 2 and judge.stats.evaluations_generated == 2
    # a few steps cannot teach a random model the format: failures are explicit, never invented scores
    assert all(j.score is not None or j.status.value in ("truncated", "no_box", "unparseable", "empty")
               for j in judgments)


def test_sft_lora_cli_merges_into_a_loadable_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cerm.backends.hf import HFBackend
    from cerm.cli.train_sft import app

    rows, out = _rows(tmp_path, 1), tmp_path / "lora"
    args = ["-c", str(RECIPES / "sft" / "tiny-cpu.yaml"), f"model={tiny_model_dir}", f"train_data={rows}",
            f"output_dir={out}", "max_steps=2", "batch_size=1", "use_lora=true", "lora_r=4",
            "lora_target_modules=q_proj,v_proj"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 steps on 2 rows" in " ".join(res.output.split())
    assert (out / "adapter" / "adapter_config.json").exists()
    final = out / "final"
    assert not (final / "adapter_config.json").exists()  # merged: a plain model directory
    backend = HFBackend(str(final), dtype="float32")
    assert Judge(backend, JudgeConfig(criteria_max_new_tokens=4, eval_max_new_tokens=4)).score("Hi?", ["Hello"])
    bad = CliRunner().invoke(app, ["-c", str(RECIPES / "sft" / "tiny-cpu.yaml"), "model=x"])
    assert bad.exit_code == 2 and "train_data is empty" in " ".join(bad.output.split())


def test_sft_row_model_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        SFTRow.model_validate({"id": "x", "bogus": 1})


def test_sft_cli_accepts_model_embedded(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`model=embedded` resolves to the HF conversion of the packaged model (here the tiny model stands in
    for the ~260 MB conversion, which tests/backends/test_vllm.py exercises)."""
    from typer.testing import CliRunner

    from cerm.backends import embedded
    from cerm.cli.train_sft import app

    monkeypatch.setattr(embedded, "embedded_hf_dir", lambda: tiny_model_dir)
    rows, out = _rows(tmp_path, 1), tmp_path / "emb"
    res = CliRunner().invoke(app, ["-c", str(RECIPES / "sft" / "tiny-cpu.yaml"), f"train_data={rows}",
                                   f"output_dir={out}", "max_steps=1", "batch_size=1"])
    assert res.exit_code == 0, res.output
    assert (out / "final" / "config.json").is_file()
