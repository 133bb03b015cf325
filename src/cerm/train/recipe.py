"""One loader for every training recipe (SFT and RL): a flat YAML file plus ``key=value`` overrides.

A recipe is a flat mapping whose keys are the fields of a config dataclass. Values in the file and in the
overrides are read by the same YAML rules, with two fixes [R] (docs/training.md §5):

- only ``true``/``false`` are booleans (YAML 1.1 also reads yes/no/on/off, so ``save_strategy: no`` and
  ``mixed_precision=no`` would become ``False``);
- ``1e-5`` without a dot is a number (YAML 1.1 reads it as a string; that is how everyone writes a learning
  rate).

pydantic checks the field types; the dataclass's ``__post_init__`` then checks the values. Every error
names the file and line (or "override") and the field.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and exponent floats (see the module docstring)."""


_BOOL = "tag:yaml.org,2002:bool"
_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def read_value(text: str) -> Any:
    """One scalar or flow value as a recipe reads it: ``"1e-2"`` -> 0.01, ``"no"`` -> ``"no"``."""
    # yaml.load with a SafeLoader subclass: as safe as yaml.safe_load
    return yaml.load(text, Loader=_RecipeLoader) if text.strip() else None


def parse_overrides(cls: type, overrides: list[str], renamed: dict[str, str] | None = None) -> dict[str, Any]:
    """``["learning_rate=1e-5", "use_lora=true"]`` -> typed values for the fields of ``cls``."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value, e.g. learning_rate=1e-5.")
        _check_key(cls, key, f"override {item!r}", renamed)
        out[key] = read_value(raw)
    return out


def load_recipe(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, *,
                renamed: dict[str, str] | None = None) -> T:
    """Read ``path`` (optional), apply ``overrides``, validate into ``cls``.

    Args:
        cls: the config dataclass; its field names are the recipe's keys.
        path: a flat YAML recipe, or None for overrides only.
        overrides: ``key=value`` strings; they win over the file.
        renamed: old key -> new key; an old key is refused with a message naming its new name.

    Raises:
        ValueError: an unknown key, a bad value or a bad combination, naming file:line (or override) and field.
    """
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    where = "overrides"
    if path is not None:
        path = resolve_recipe(path)
        where = str(path)
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=_RecipeLoader)
        if node is not None:
            if not isinstance(node, yaml.MappingNode):
                raise ValueError(f"{path}: a recipe must be a flat mapping of key: value.")
            lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
            values = yaml.load(text, Loader=_RecipeLoader) or {}
        for key in values:
            _check_key(cls, key, f"{path}:{lines.get(key, '?')}", renamed)
    override_values = parse_overrides(cls, overrides or [], renamed)
    values.update(override_values)
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # raised by __post_init__: a bad combination, not one bad field
            raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
        key = str(first["loc"][0])
        origin = "override" if key in override_values else f"{where}:{lines.get(key, '?')}"
        raise ValueError(f"{origin}: field {key!r}: {first['msg']} (got {first.get('input')!r:.80}).") from None


def shipped_recipes() -> list[str]:
    """The recipes that ship inside the package, as names relative to it (``sft/tiny-cpu.yaml``)."""
    root = Path(str(resources.files("cerm"))) / "recipes"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def shipped_recipe(name: str | Path) -> Path:
    """The shipped recipe ``name`` names: ``recipes/sft/tiny-cpu.yaml`` (the repository's path),
    ``sft/tiny-cpu.yaml``, ``sft/tiny-cpu`` or ``tiny-cpu`` (a unique file name).

    Raises:
        FileNotFoundError: no shipped recipe of that name, listing the shipped ones.
    """
    root = Path(str(resources.files("cerm"))) / "recipes"
    wanted = Path(name).as_posix().removeprefix("recipes/")
    wanted = wanted if wanted.endswith((".yaml", ".yml")) else f"{wanted}.yaml"
    shipped = shipped_recipes()
    matches = [r for r in shipped if r == wanted] or [r for r in shipped if r.rsplit("/", 1)[-1] == wanted]
    if len(matches) != 1:
        raise FileNotFoundError(f"{name}: no such file, and no shipped recipe of that name; shipped: "
                                f"{', '.join(shipped)} (`cerm recipes NAME` prints one).")
    return root / matches[0]


def resolve_recipe(path: str | Path) -> Path:
    """A recipe file as given, else the shipped recipe of that name (so the README's commands work
    outside a clone too).
    """
    return Path(path) if Path(path).exists() else shipped_recipe(path)


def _check_key(cls: type, key: str, origin: str, renamed: dict[str, str] | None) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    if key in known:
        return
    if renamed and key in renamed:
        raise ValueError(f"{origin}: key {key!r} is now called {renamed[key]!r} (same meaning); rename it.")
    raise ValueError(f"{origin}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}.")
