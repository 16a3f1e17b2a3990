"""Config files read as Snakemake reads them, and stricter: a key given twice, a YAML tag and an alias
bomb are each one line naming the file and the line, and a message never writes out a whole value; and
the schema they are checked against."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import CvmError

# A config is a few hundred values; far more through YAML aliases is an "alias bomb" (a billion laughs),
# which would take memory and time without bound in anything that walks the values (validation, messages).
MAX_CONFIG_VALUES = 100_000
# Package data (not workflow/schemas/): the library validates the same way from an installed wheel.
SCHEMA = Path(__file__).resolve().with_name("config.schema.yaml")


def load_schema(path: str | os.PathLike = SCHEMA) -> dict:
    """The config schema (the package's own file: trusted, read as plain YAML)."""
    return yaml.safe_load(Path(path).read_text())


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last one, so
    a second ``train:`` would replace the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
            if isinstance(key, str | int | float | bool):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def excerpt(value, limit: int = 80) -> str:
    """A short ``repr`` of ``value``, however large or deeply nested (a message never writes out a whole
    value: through aliases it can be bigger than memory)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def count_values(value, source: str, limit: int = MAX_CONFIG_VALUES) -> int:
    """How many values ``value`` holds once every YAML alias is written out (each shared part counted as
    often as it is used), or a :class:`CvmError` past ``limit``; counted once per shared part, so it takes
    no longer than the file is long."""
    sizes: dict[int, int] = {}

    def size(v) -> int:
        if not isinstance(v, dict | list):
            return 1
        if id(v) not in sizes:
            sizes[id(v)] = 0  # a cycle (YAML allows none through safe_load, but a caller's dict may) counts once
            children = v.values() if isinstance(v, dict) else v
            total = 1
            for child in children:
                total += size(child)
                if total > limit:
                    break
            sizes[id(v)] = total
        return sizes[id(v)]

    n = size(value)
    if n > limit:
        raise CvmError(
            f"{source} holds more than {limit:,} values once its YAML aliases (&name, *name) are written out; "
            "a config is a few hundred: write the values out, or use fewer nested aliases"
        )
    return n


def read_config_file(path: str | os.PathLike) -> dict:
    """A config file as Snakemake reads it (JSON or plain YAML), or one line naming the file, the line and
    what is wrong. Snakemake reads ``--configfile`` itself, before the workflow starts, and refuses a YAML
    tag (``!!python/object``) with a message that names neither: ``cvm-cervix check-config`` names both.
    Stricter than Snakemake: a key given twice in one mapping is refused (Snakemake keeps the last one),
    and so is a file that YAML aliases expand past :data:`MAX_CONFIG_VALUES` values."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CvmError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CvmError(f"config file {path} cannot be read ({err}); save it as UTF-8 text") from None
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader: plain values only)
    except _DuplicateKey as dup:
        raise CvmError(
            f"config file {path}, line {dup.second}: key {excerpt(dup.key)} is given twice in one mapping (first "
            f"on line {dup.first}); YAML keeps only the last, so the first would be ignored: merge them into one"
        ) from None
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        tag = err.problem.split()[-1].strip("'").replace("tag:yaml.org,2002:", "!!")
        raise CvmError(
            f"config file {path}, line {mark.line + 1 if mark else '?'}: the YAML tag {tag} "
            "is not allowed (plain values only: text, numbers, true/false, lists, mappings); remove "
            "it"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise CvmError(
            f"config file {path}, line {mark.line + 1 if mark else '?'}: not valid YAML "
            f"({getattr(err, 'problem', None) or excerpt(str(err), 200)}); a tab in the indentation is a common cause"
        ) from None
    if not isinstance(value, dict):
        raise CvmError(f"config file {path} must be a mapping of keys at its top level, not {type(value).__name__}")
    count_values(value, f"config file {path}")
    return value
