"""Jinja2 rendering: sandboxed, strict, autoescaped HTML, compiled templates cached; and
which template version an email renders with.

A template row is immutable (a change is a new version), so a compiled template is keyed by
(name, locale, version) and kept for the life of the process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from delivery_server.errors import PermanentError
from delivery_server.models import Template
from delivery_server.ports import EmailStore

_MAX_CACHED = 512
DEFAULT_LOCALE = "en"
TEMPLATE_TTL = 30.0


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
        self._names: dict[tuple[str, str, int], frozenset[str]] = {}
        self._sms: dict[tuple[str, str, int], jinja2.Template] = {}

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
                raise _syntax_error(template, exc) from exc
            if len(self._cache) >= _MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = compiled
        return compiled

    def variable_names(self, template: Template) -> frozenset[str]:
        """The top-level variables the template's parts name (what a webhook passes on
        beside the rendered text); a syntax error is permanent, as in ``render``."""
        key = (template.name, template.locale, template.version)
        names = self._names.get(key)
        if names is None:
            sources = (template.subject, template.text_body, template.html_body or "")
            try:
                names = frozenset().union(
                    *(
                        jinja2.meta.find_undeclared_variables(self._text_env.parse(source))
                        for source in sources
                    )
                )
            except jinja2.TemplateSyntaxError as exc:
                raise _syntax_error(template, exc) from exc
            if len(self._names) >= _MAX_CACHED:
                self._names.pop(next(iter(self._names)))
            self._names[key] = names
        return names

    def render_sms_body(self, template: Template, variables: Mapping[str, Any]) -> str:
        """Render the template's ``sms_body`` (plain text, as the text body is); the same
        errors as ``render``, and a template without one is permanent."""
        if template.sms_body is None:
            raise PermanentError(f"template {template.name!r} has no sms_body")
        key = (template.name, template.locale, template.version)
        compiled = self._sms.get(key)
        if compiled is None:
            try:
                compiled = self._text_env.from_string(template.sms_body)
            except jinja2.TemplateSyntaxError as exc:
                raise _syntax_error(template, exc) from exc
            if len(self._sms) >= _MAX_CACHED:
                self._sms.pop(next(iter(self._sms)))
            self._sms[key] = compiled
        try:
            body = compiled.render(variables)
        except jinja2.UndefinedError as exc:
            raise PermanentError(f"template {template.name!r}: {exc.message}") from exc
        except SecurityError as exc:
            raise PermanentError(f"template {template.name!r}: unsafe operation refused") from exc
        except jinja2.TemplateError as exc:
            raise PermanentError(f"template {template.name!r}: {exc}") from exc
        if len(body) > self._max_bytes:
            raise PermanentError(
                f"template {template.name!r}: rendered SMS is {len(body)} characters, "
                f"over the {self._max_bytes} limit"
            )
        return body

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


class TemplateCache:
    """The template an email renders with, per (name, locale, pinned version), looked up
    again every ``ttl`` seconds rather than once per email.

    A job is pinned to a version when it starts (``Job.template_version``): it gets, in
    each locale, the newest version at or below its pin, which no later push changes
    (later versions are numbered above it). A job not pinned (started before pinning
    existed, or before its template had a version) gets the latest, picked up within
    ``ttl`` of a push.
    """

    def __init__(
        self, store: EmailStore, ttl: float = TEMPLATE_TTL, max_entries: int = _MAX_CACHED
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str, int | None], tuple[float, Template | None]] = {}

    async def get(self, name: str, locale: str, as_of: int | None = None) -> Template | None:
        key = (name, locale, as_of)
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        template = await self._store.template(name, locale, as_of)
        if hit is None and len(self._entries) >= self._max_entries:
            # Pins of jobs long finished are the oldest entries: drop the oldest.
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (now, template)
        return template

    async def resolve(self, name: str, locale: str | None, as_of: int | None = None) -> Template:
        """The email's locale, else the default locale (each at or below ``as_of`` when
        the job is pinned); missing everywhere is permanent."""
        candidates = tuple(dict.fromkeys((locale or DEFAULT_LOCALE, DEFAULT_LOCALE)))
        for candidate in candidates:
            template = await self.get(name, candidate, as_of)
            if template is not None:
                return template
        if as_of is not None:
            raise PermanentError(
                f"template {name!r} has no version at or below {as_of} (the job's pinned "
                f"version) in locale {' or '.join(repr(c) for c in candidates)}"
            )
        raise PermanentError(f"template {name!r} does not exist")


def _syntax_error(template: Template, exc: jinja2.TemplateSyntaxError) -> PermanentError:
    return PermanentError(
        f"template {template.name!r} has a syntax error on line {exc.lineno}: {exc.message}"
    )
