"""Jinja2 rendering: sandboxed, strict, autoescaped HTML, compiled templates cached.

A template row is immutable (a change is a new version), so a compiled template is keyed by
(name, locale, version) and kept for the life of the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from delivery_server.errors import PermanentError
from delivery_server.models import Template

_MAX_CACHED = 512


@dataclass(frozen=True, slots=True)
class RenderedContent:
    subject: str
    text_body: str
    html_body: str | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    subject: jinja2.Template
    text_body: jinja2.Template
    html_body: jinja2.Template | None


# What ``getattr(dict_instance, name)`` can find: dict's own attributes, nothing else.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a shortcut for the common case of ``{{ line.amount }}`` on
    variables (JSON objects are dicts): the sandbox tries the attribute first and finds
    the key only after an AttributeError, for every lookup. For a dict and a name that
    is not a dict attribute, that lookup can only end at the key: take it at once."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


class Renderer:
    """Renders templates with per-recipient variables.

    Variables cannot reach Python internals (sandbox), a missing variable is an error rather
    than an empty string (``StrictUndefined``), and HTML output escapes variables.
    """

    def __init__(self, max_bytes: int = 2_000_000) -> None:
        self._max_bytes = max_bytes
        self._text_env = _Environment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self._html_env = _Environment(
            undefined=jinja2.StrictUndefined, autoescape=True, keep_trailing_newline=True
        )
        self._cache: dict[tuple[str, str, int], _Compiled] = {}

    def _compile(self, template: Template) -> _Compiled:
        key = (template.name, template.locale, template.version)
        compiled = self._cache.get(key)
        if compiled is None:
            try:
                compiled = _Compiled(
                    subject=self._text_env.from_string(template.subject),
                    text_body=self._text_env.from_string(template.text_body),
                    html_body=(
                        self._html_env.from_string(template.html_body)
                        if template.html_body
                        else None
                    ),
                )
            except jinja2.TemplateSyntaxError as exc:
                raise PermanentError(
                    f"template {template.name!r} has a syntax error on line {exc.lineno}: "
                    f"{exc.message}"
                ) from exc
            if len(self._cache) >= _MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = compiled
        return compiled

    def render(self, template: Template, variables: Mapping[str, Any]) -> RenderedContent:
        """Render all parts; a missing variable or a sandbox violation is permanent."""
        compiled = self._compile(template)
        try:
            subject = compiled.subject.render(variables)
            text_body = compiled.text_body.render(variables)
            html_body = compiled.html_body.render(variables) if compiled.html_body else None
        except jinja2.UndefinedError as exc:
            raise PermanentError(f"template {template.name!r}: {exc.message}") from exc
        except SecurityError as exc:
            raise PermanentError(f"template {template.name!r}: unsafe operation refused") from exc
        except jinja2.TemplateError as exc:
            raise PermanentError(f"template {template.name!r}: {exc}") from exc
        size = len(subject) + len(text_body) + (len(html_body) if html_body else 0)
        if size > self._max_bytes:
            raise PermanentError(
                f"template {template.name!r}: rendered email is {size} characters, "
                f"over the {self._max_bytes} limit"
            )
        # A subject is one header line: newlines from variables would be header injection.
        subject = subject.strip()
        if "\r" in subject or "\n" in subject:
            raise PermanentError(f"template {template.name!r}: subject contains a line break")
        return RenderedContent(subject=subject, text_body=text_body, html_body=html_body)
