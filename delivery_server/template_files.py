"""Template files: one TOML file per template and locale, checked before they are stored.

The format (``delivery-server templates push PATH...``)::

    # statement.en.toml
    name = "statement"        # optional: the file name up to its first dot
    locale = "en"             # optional: the second part of the file name, else "en"
    subject = "Your {{ period }} statement"
    text_body = '''
    Dear {{ name }}, ...
    '''
    html_body = '''<p>Dear {{ name }}, ...</p>'''   # optional
    sms_body = "Your {{ period }} statement is ready"   # what sms jobs send

A template for sms jobs only may leave out ``subject`` and ``text_body``; every other
template needs both.

A directory stands for every ``*.toml`` file under it. Every part is compiled by the
``Renderer`` that will send it, so a syntax error is reported with its file and line
before anything reaches the database.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from delivery_server.errors import PermanentError, TemplateFileError
from delivery_server.models import Template
from delivery_server.recipients import is_valid_locale
from delivery_server.renderer import Renderer

PARTS = ("subject", "text_body", "html_body", "sms_body")
KEYS = frozenset({"name", "locale", *PARTS})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


@dataclass(frozen=True, slots=True)
class TemplateFile:
    path: Path
    template: Template  # version 0: the store assigns the next one


def template_paths(paths: Iterable[Path]) -> list[Path]:
    """The TOML files that ``paths`` name (directories are searched, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.rglob("*.toml"))
            if not files:
                raise TemplateFileError(f"{path}: no *.toml template files in this directory")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise TemplateFileError(f"{path}: no such file or directory")
    return found


def load_template_file(path: Path) -> TemplateFile:
    """Read and check one template file; ``TemplateFileError`` says what is wrong where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TemplateFileError(f"{path}: not UTF-8 text") from exc
    return parse_template_file(path, text)


def parse_template_file(path: Path, text: str) -> TemplateFile:
    """Check the text of a template file; ``path`` names it (and its name and locale)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateFileError(f"{path}: not valid TOML: {exc}") from exc
    template = _template(path, data)
    _check_compiles(path, text, template)
    return TemplateFile(path, template)


def bundled_templates() -> list[TemplateFile]:
    """The example templates shipped in the package (the demo pushes them)."""
    folder = resources.files("delivery_server") / "examples" / "templates"
    return [
        parse_template_file(Path("examples/templates") / entry.name, entry.read_text("utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(".toml")
    ]


def _template(path: Path, data: dict[str, Any]) -> Template:
    unknown = sorted(set(data) - KEYS)
    if unknown:
        allowed = ", ".join(sorted(KEYS))
        raise TemplateFileError(f"{path}: unknown key {unknown[0]!r} (allowed: {allowed})")
    stem_parts = path.name.split(".")
    name = data.get("name", stem_parts[0])
    locale = data.get("locale", stem_parts[1] if len(stem_parts) > 2 else "en")
    for key in ("subject", "text_body"):
        if key not in data and "sms_body" not in data:
            raise TemplateFileError(f"{path}: {key!r} is missing (or give only sms_body)")
    for key in ("name", "locale", *PARTS):
        value = {"name": name, "locale": locale}.get(key, data.get(key))
        if value is not None and not isinstance(value, str):
            raise TemplateFileError(f"{path}: {key!r} must be a string")
    if not _NAME.fullmatch(name):
        raise TemplateFileError(
            f"{path}: template name {name!r} must be letters, digits, '_', '.' or '-'"
        )
    if not is_valid_locale(locale):
        raise TemplateFileError(f"{path}: invalid locale {locale!r} (use e.g. 'en' or 'de-CH')")
    return Template(
        name=name,
        locale=locale,
        version=0,
        subject=data.get("subject", ""),
        text_body=data.get("text_body", ""),
        html_body=data.get("html_body") or None,
        sms_body=data.get("sms_body") or None,
    )


def _check_compiles(path: Path, text: str, template: Template) -> None:
    """Compile with the renderer that will send it; name the file line of a syntax error."""
    try:
        # Rendering with no variables compiles every part first; only a syntax error
        # matters here (missing variables are expected: they come with each email).
        renderer = Renderer()
        renderer.render(template, {})
        if template.sms_body is not None:
            renderer.render_sms_body(template, {})
    except PermanentError as exc:
        cause = exc.__cause__
        if isinstance(cause, jinja2.TemplateSyntaxError):
            part = next((p for p in PARTS if getattr(template, p) == cause.source), None)
            where = _file_line(text, part, cause.lineno) if part else None
            location = f"{path}:{where}" if where else str(path)
            in_part = f" in {part}" if part else ""
            raise TemplateFileError(
                f"{location}: template syntax error{in_part}: {cause.message}"
            ) from exc


def _file_line(text: str, part: str, line_in_part: int) -> int | None:
    """The file line of a line of ``part``: where its key is, plus the offset.

    TOML drops the newline right after an opening triple quote, so the part's first line
    is then the line after the key.
    """
    key = re.compile(rf"^\s*{part}\s*=\s*(\"\"\"|''')?(.*)$")
    for number, line in enumerate(text.splitlines(), start=1):
        match = key.match(line)
        if match:
            starts_next_line = bool(match.group(1)) and not match.group(2).strip()
            return number + line_in_part - (0 if starts_next_line else 1)
    return None
