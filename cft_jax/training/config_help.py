"""The config keys as `python -m cft_jax.train --help` lists them: each key's type, default and description.

A key's description is its field's comment in cft_jax/config.py (the one at the end of its line, else
the comment lines right above it), read from the source with `ast` and `tokenize`: the schema stays
the one place where a key is explained.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal

from cft_jax import config as config_lib


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> its comment, for every annotated field of every class in `source`."""
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for field in node.body:
            if not (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)):
                continue
            trailing = [comments[n] for n in range(field.lineno, field.end_lineno + 1) if n in comments]
            above, n = [], field.lineno - 1
            while n in comments and lines[n - 1].lstrip().startswith("#"):
                above.insert(0, comments[n])
                n -= 1
            text = " ".join(trailing or above)
            if text:
                found[(node.name, field.target.id)] = text
    return found


def type_name(annotation: Any) -> str:
    """How a field's type reads on the command line: `int`, `{a,b}`, `list of str`, `str or None`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(origin or annotation, "__name__", str(annotation))


def config_keys() -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, description) of every key, in the schema's order."""
    comments = field_comments(Path(config_lib.__file__).read_text())
    defaults = config_lib.TrainConfig()
    keys = []
    for section in dataclasses.fields(defaults):
        kind = type(getattr(defaults, section.name))
        hints = typing.get_type_hints(kind)
        for field in dataclasses.fields(kind):
            default = getattr(getattr(defaults, section.name), field.name)
            description = comments.get((kind.__name__, field.name), "")
            keys.append((f"{section.name}.{field.name}", type_name(hints[field.name]), default, description))
    return keys


def sections() -> dict[str, str]:
    """Section name -> the first line of its class docstring ("" for a class without one)."""
    out = {}
    for section in dataclasses.fields(config_lib.TrainConfig):
        kind = type(getattr(config_lib.TrainConfig(), section.name))
        doc = kind.__doc__ or ""
        # dataclasses give a class without a docstring its signature as one: not a description.
        out[section.name] = "" if doc.startswith(f"{kind.__name__}(") else doc.splitlines()[0]
    return out


def config_help(width: int = 100) -> str:
    """The help text: every key as `key: type = default`, its description indented below."""
    lines = [
        "config keys (set in the config file, Python or YAML, or as --config.KEY=VALUE; a list as a,b or "
        'JSON ["a","b"]):'
    ]
    headers, current = sections(), None
    for key, kind, default, description in config_keys():
        section = key.partition(".")[0]
        if section != current:
            current = section
            lines += ["", f"{section}:" + (f" {headers[section]}" if headers[section] else "")]
        lines.append(f"  {key}: {kind} = {default!r}")
        if description:
            lines += textwrap.wrap(description, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)
