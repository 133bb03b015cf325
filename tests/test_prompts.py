import hashlib

import pytest
from support import SHARED

from cerm.prompts import (
    CRITERIA_SHA256,
    EVALUATION_SHA256,
    PROMPT_VERSION,
    criteria_messages,
    evaluation_messages,
    load_template,
    render_query,
)


@pytest.mark.parametrize("name,sha", [("criteria", CRITERIA_SHA256), ("evaluation", EVALUATION_SHA256)])
def test_templates_are_byte_identical_to_the_spec(name, sha):
    shipped = load_template(name).encode("ascii")
    assert hashlib.sha256(shipped).hexdigest() == sha
    spec = SHARED / "spec" / "prompts" / f"{name}.txt"
    if spec.exists():
        assert shipped == spec.read_bytes()


def test_placeholders_filled_raw_with_braces_and_boxes_kept():
    query = "Use {braces} and \\boxed{} and {response} literally"
    [msg] = criteria_messages(query)
    assert msg["role"] == "user"
    assert "[Start of Query]\n" + query + "\n[End of Query]\n" in msg["content"]
    assert msg["content"].count("{query}") == 0
    conv = evaluation_messages("q", "CRIT", "  resp {x}  ")
    assert [m["role"] for m in conv] == ["user", "assistant", "user"]
    assert conv[1]["content"] == "CRIT"  # fed back verbatim
    assert "[Start of Response]\n  resp {x}  \n[End of Response]\n" in conv[2]["content"]
    assert conv[2]["content"].count("$\\boxed{}$") == 2


def test_render_query_single_and_multi_turn():
    assert render_query("hi") == "hi"
    assert render_query([{"role": "user", "content": "hi"}]) == "hi"
    text = render_query([
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
    ])
    assert text == "[User]\na\n\n[Assistant]\nb\n\n[Current User Turn]\nc"


@pytest.mark.parametrize("bad", [[], [{"role": "assistant", "content": "x"}], [{"role": "user"}],
                                 [{"role": "user", "content": 3}]])
def test_render_query_rejects_bad_histories(bad):
    with pytest.raises(ValueError):
        render_query(bad)


def test_prompt_version_names_both_hashes():
    assert CRITERIA_SHA256[:8] in PROMPT_VERSION and EVALUATION_SHA256[:8] in PROMPT_VERSION
