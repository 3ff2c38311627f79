"""A battery of 1,000 generated malformed RL configs through ``agentscope.rl.load_config``: every one raises
``ConfigError`` naming the field (or, for a file that is no config at all, saying why), never another exception.

The configs are YAML files and ``--set`` overrides: wrong types and out-of-range values for every field,
NaN and infinities, unknown and misspelt keys, sections replaced by values, invalid YAML, files that are not
UTF-8 or not a mapping, values nested past Python's stack, YAML aliases that repeat or contain themselves, and
malformed overrides. Before the loader's checks, some raised UnicodeDecodeError, ValueError (integers beyond
4300 digits) or RecursionError, one looped on a self-referring alias, and ``trainer.lr: .inf`` loaded.
"""

from __future__ import annotations

import itertools
import random
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from agentscope.exceptions import ConfigError
from agentscope.rl import RLConfig, load_config

BATTERY = 1000


@dataclass(frozen=True)
class Leaf:
    key: str
    """Dotted key, e.g. ``trainer.lr``."""
    kinds: frozenset[str]
    """What the field accepts: int, float, str, bool, none, dict, literal."""
    literals: tuple[object, ...]
    lower: float | None
    """The smallest value allowed (``ge``), or just above it (``gt``)."""
    strict_lower: bool


def _kinds(annotation: Any, literals: list[object]) -> set[str]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0], literals)
    if origin in (typing.Union, types.UnionType):
        found: set[str] = set()
        for arg in typing.get_args(annotation):
            found |= _kinds(arg, literals)
        return found
    if origin is Literal:
        literals.extend(typing.get_args(annotation))
        return {"literal"}
    if origin is dict or annotation is dict:
        return {"dict"}
    if annotation is type(None):
        return {"none"}
    names = {int: "int", float: "float", str: "str", bool: "bool"}
    return {names.get(annotation, "other")}


def leaves(model: type[BaseModel] = RLConfig, prefix: str = "") -> Iterator[Leaf]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, f"{prefix}{name}.")
            continue
        literals: list[object] = []
        kinds = _kinds(annotation, literals)
        lower: float | None = None
        strict = False
        for meta in info.metadata:
            if isinstance(meta, annotated_types.Ge):
                lower = float(meta.ge)  # type: ignore[arg-type]
            elif isinstance(meta, annotated_types.Gt):
                lower, strict = float(meta.gt), True  # type: ignore[arg-type]
        yield Leaf(f"{prefix}{name}", frozenset(kinds), tuple(literals), lower, strict)


LEAVES = [leaf for leaf in leaves() if "other" not in leaf.kinds]
SECTIONS = sorted(
    name
    for name, info in RLConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)


def invalid_values(leaf: Leaf) -> list[object]:
    """Values the field cannot take (whatever else it accepts)."""
    kinds = leaf.kinds
    values: list[object] = []
    if not kinds & {"str", "literal"}:
        values += ["not a number", "1 2", ""]
    if "dict" not in kinds:
        values += [[1, 2], {"nested": 1}]
    else:
        values += ["text", [1], 5, {"deep": float("nan")}]
    if "none" not in kinds:
        values.append(None)
    if "literal" in kinds:
        values += ["no-such-mode", 7]
    if kinds & {"int", "float"}:
        values += [float("nan"), float("inf"), float("-inf")]
        if leaf.lower is not None:
            values.append(leaf.lower - 1 if not leaf.strict_lower else leaf.lower)
    if "int" in kinds and "float" not in kinds:
        values.append(2.5)
    if "bool" in kinds:
        values += ["perhaps", 3]
    if kinds == frozenset({"str"}) or kinds == frozenset({"str", "none"}):
        values += [12, 3.5, True]
    return values


def _nest(keys: str, value: object) -> dict[str, Any]:
    data: Any = value
    for part in reversed(keys.split(".")):
        data = {part: data}
    return data


def _yaml_scalar(value: object) -> str:
    """``value`` as the text of a ``--set`` override."""
    if isinstance(value, float) and value != value:
        return ".nan"
    if value == float("inf"):
        return ".inf"
    if value == float("-inf"):
        return "-.inf"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


@dataclass(frozen=True)
class Case:
    yaml_text: bytes | None
    overrides: tuple[str, ...]
    names: str
    """What the ConfigError must mention (the field, or the problem when no field is to blame)."""


def malformed_configs(n: int, seed: int = 5) -> Iterator[Case]:
    rng = random.Random(seed)
    # Round robin over the fields (each field's bad values shuffled), so that every field is broken early.
    per_field = [
        [(leaf.key, v) for v in rng.sample(invalid_values(leaf), k=len(invalid_values(leaf)))]
        for leaf in LEAVES
    ]
    field_cases = [pair for row in itertools.zip_longest(*per_field) for pair in row if pair is not None]
    makers: list[typing.Callable[[int], Case]] = []

    next_field = itertools.cycle(field_cases).__next__  # every (field, bad value) pair in turn

    def field_in_file(i: int) -> Case:
        key, value = next_field()
        text = yaml.safe_dump(_nest(key, value), allow_unicode=True)
        return Case(text.encode(), (), key)

    def field_in_override(i: int) -> Case:
        key, value = next_field()
        return Case(None, (f"{key}={_yaml_scalar(value)}",), key)

    def unknown_key(i: int) -> Case:
        leaf = LEAVES[i % len(LEAVES)]
        section, _, name = leaf.key.rpartition(".")
        typo = f"{section}.{name}x" if section else f"{name}_typo"
        return Case(yaml.safe_dump(_nest(typo, 1)).encode(), (), typo)

    def section_as_value(i: int) -> Case:
        section = SECTIONS[i % len(SECTIONS)]
        value = rng.choice([5, "text", [1, 2], True])
        if rng.random() < 0.5:
            return Case(yaml.safe_dump({section: value}).encode(), (), section)
        return Case(None, (f"{section}.{rng.choice(['x', 'y'])}.deeper=1",), section)

    def broken_yaml(i: int) -> Case:
        text = rng.choice(
            [
                "trainer: {lr: 1\n",
                "trainer:\n  lr: 1\n lr2: 2\n",
                "trainer:\n\t- lr\n",
                "a: [1, 2\n",
                "key: 'unterminated\n",
                "- a\nb: c\n",
                "trainer: !!python/object:os.system {}\n",
                "{[1, 2]: 3}\n",
                "trainer: &a {lr: *b}\n",
            ]
        )
        return Case(text.encode(), (), "is not valid YAML")

    def not_a_mapping(i: int) -> Case:
        return Case(
            rng.choice([b"- 1\n- 2\n", b"42\n", b"just text\n", b"[trainer]\n"]), (), "must hold a mapping"
        )

    def not_utf8(i: int) -> Case:
        return Case(
            rng.choice([b"\xff\xfe\x00t\x00", b"seed: \xc3\x28\n", b"\x80abc"]), (), "is not UTF-8 text"
        )

    def huge_number(i: int) -> Case:
        if rng.random() < 0.5:
            return Case(f"seed: {'9' * 5000}\n".encode(), (), "cannot be read")
        return Case(None, (f"seed={'9' * 5000}",), "seed")

    def too_deep(i: int) -> Case:
        if i % 200:
            return Case(("env:\n  kwargs: {a: " + "[" * 400 + "]" * 400 + "}\n").encode(), (), "env.kwargs")
        return Case(None, ("env.kwargs={a: " + "[" * 400 + "]" * 400 + "}",), "env.kwargs")

    def alias_bomb(i: int) -> Case:
        if i % 200 == 99:
            return Case(b"env: {kwargs: &x {a: *x}}\n", (), "holds more than 100,000 values")
        lines = ["env:", "  kwargs:", "    l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
        for level in range(1, 6):
            lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
        return Case(("\n".join(lines) + "\n").encode(), (), "holds more than 100,000 values")

    def bad_override(i: int) -> Case:
        item = rng.choice(["seed", "=1", "trainer..lr=1", ".seed=1", "seed.=1", " = ", "no equals sign"])
        return Case(None, (item,), "--set")

    def bad_task_spec(i: int) -> Case:
        key = rng.choice(["tasks", "eval_tasks", "sft.tasks"])
        spec = rng.choice([":", "arith:n", "arith:=1", "arith:n=1,seed", "arith:,=", ":n=1"])
        return Case(yaml.safe_dump(_nest(key, spec)).encode(), (), key)

    makers = [field_in_file] * 5 + [field_in_override] * 4
    makers += [unknown_key, section_as_value, broken_yaml, not_a_mapping, not_utf8, huge_number, bad_override]
    makers += [bad_task_spec]
    rare = {50: too_deep, 99: alias_bomb}  # slow ones (YAML's parser, 100,000 values walked): 10 of each
    for i in range(n):
        maker = rare.get(i % 100) or makers[i % len(makers)]
        yield maker(i)


def test_the_battery_reaches_every_field() -> None:
    cases = list(malformed_configs(BATTERY))
    assert len(cases) == BATTERY
    named = {case.names for case in cases}
    assert {leaf.key for leaf in LEAVES} <= named, "some field is never broken"
    assert len(LEAVES) > 60


def test_1000_malformed_configs_each_raise_a_config_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    failures: list[str] = []
    for i, case in enumerate(malformed_configs(BATTERY)):
        if case.yaml_text is not None:
            path.write_bytes(case.yaml_text)
        try:
            load_config(path if case.yaml_text is not None else None, case.overrides)
        except ConfigError as exc:
            if case.names not in str(exc):
                failures.append(f"#{i} {case}: the error does not name {case.names!r}: {exc}")
        except Exception as exc:  # the bug this battery looks for
            failures.append(f"#{i} {case}: {type(exc).__name__}: {exc}")
        else:
            failures.append(f"#{i} {case}: loaded without an error")
    assert not failures, f"{len(failures)} of {BATTERY} failed:\n" + "\n".join(f[:400] for f in failures[:20])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.lr=.inf"], "trainer.lr: inf: must be a finite number"),
        (["env.kwargs={a: [1, {b: .nan}]}"], "env.kwargs.a[1].b: nan: must be a finite number"),
        (["seed=" + "9" * 5000], "seed: "),
    ],
)
def test_specific_messages(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, overrides)


def test_a_directory_or_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path, ())
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", ())
