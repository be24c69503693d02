"""A griffe extension for the API reference: Sphinx roles in docstrings become mkdocstrings cross-references.

prunus's docstrings are Google style and name other objects the way ``help()`` readers and Sphinx know,
``:class:`~prunus.Criterion```, ``:func:`select_targets```. mkdocstrings reads Markdown, where that text would
show as it is. This extension, loaded by mkdocs.yml, rewrites each role into an autorefs link,
``[`Criterion`][prunus.strategy.Criterion]``, resolving a short name the way Sphinx does (the object's own scope,
then its parents up to the module, then the package); a ``~`` shows the last component only, and
``:meth:`title <target>``` shows the title. A ``prunus`` name
that resolves to nothing is still written as a link, so ``mkdocs build --strict`` reports it; a name from
another package (torch, pluggy) is shown as code. reStructuredText's ``::`` before a literal block becomes
``:`` (the indented block is already code in Markdown), a ``.. code-block:: python`` directive a fenced
``python`` block, and doctest lines (``>>>``) a ``pycon`` block without their ``# doctest:`` directives.

The docstrings in the source stay as they are: only the copies the docs site renders are rewritten.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(?P<target>[^`]+)`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$|^\s*::$", re.MULTILINE)
CODE_BLOCK = re.compile(r"^(?P<indent>\s*)\.\. code-block:: (?P<lang>\w+)\s*$")
DOCTEST_DIRECTIVE = re.compile(r"\s*# doctest: [^\n]*$")
ROOT = "prunus"


class SphinxRolesToCrossrefs(griffe.Extension):
    """Rewrite the docstrings of the ``prunus`` package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path == ROOT:
            _rewrite(pkg, loader)


def _rewrite(obj: griffe.Object, loader: griffe.GriffeLoader) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _convert(obj.docstring.value, obj, loader)
    for member in obj.members.values():
        if not member.is_alias:
            assert isinstance(member, griffe.Object)
            _rewrite(member, loader)


def _convert(text: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str:
    def link(match: re.Match[str]) -> str:
        target = match["target"].strip()
        title, _, explicit = target.partition(" <")
        if explicit:  # :meth:`prunus.registry.get <prunus.Registry.get>`: shown as the title
            target, shown = explicit.rstrip(">").lstrip("~.!"), title
        else:
            short = target.startswith("~")
            target = target.lstrip("~.!")
            shown = target.rsplit(".", 1)[-1] if short else target
        identifier = _resolve(target, scope, loader)
        if identifier is None:
            if target.split(".", 1)[0] != ROOT:
                return f"`{shown}`"
            identifier = target  # left for autorefs to report
        return f"[`{shown}`][{identifier}]"

    return _fence_doctests(LITERAL_BLOCK.sub(":", _fence_code_blocks(ROLE.sub(link, text))))


def _fence_code_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        directive = CODE_BLOCK.match(lines[i])
        if directive is None:
            out.append(lines[i])
            i += 1
            continue
        indent = directive["indent"]
        body: list[str] = []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        depth = min(len(line) - len(line.lstrip()) for line in body if line.strip())
        out.append(f"{indent}```{directive['lang']}")
        out.extend(indent + line[depth:] if line.strip() else "" for line in body)
        out.extend([f"{indent}```", ""])
    return "\n".join(out)


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    indent: str | None = None
    for line in text.split("\n"):
        if indent is not None and (not line.strip() or not line.startswith(indent)):
            out.append(f"{indent}```")
            indent = None
        if indent is None and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
        out.append(DOCTEST_DIRECTIVE.sub("", line) if indent is not None else line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


def _resolve(target: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    first, _, rest = target.partition(".")
    scopes: list[Any] = []
    current: Any = scope
    while current is not None:
        scopes.append(current)
        current = current.parent
    for place in scopes:
        if first in place.members:
            found = _walk(place.members[first], rest)
            if found is not None:
                return found
    if first == ROOT:
        return _walk(loader.modules_collection[ROOT], rest)
    return None


def _walk(obj: Any, rest: str) -> str | None:
    try:
        for part in filter(None, rest.split(".")):
            obj = obj.members[part]
        return str(obj.canonical_path)
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
