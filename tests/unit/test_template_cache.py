"""``renderer.TemplateCache``: which template version an email renders with."""

from __future__ import annotations

from typing import Any

import pytest

from delivery_server.errors import PermanentError
from delivery_server.models import Template
from delivery_server.renderer import TemplateCache

pytestmark = pytest.mark.timeout(10)


class Versions:
    """Template versions as the store keeps them: ``template`` as ``EmailStore`` answers."""

    def __init__(self, *templates: Template) -> None:
        self.templates = list(templates)
        self.lookups: list[tuple[str, str, int | None]] = []

    async def template(self, name: str, locale: str, as_of: int | None = None) -> Template | None:
        self.lookups.append((name, locale, as_of))
        found = [
            t
            for t in self.templates
            if (t.name, t.locale) == (name, locale) and (as_of is None or t.version <= as_of)
        ]
        return max(found, key=lambda t: t.version, default=None)


def version(locale: str, number: int) -> Template:
    return Template("notice", locale, number, f"{locale} {number}", "body")


def cache(store: Versions, **kwargs: Any) -> TemplateCache:
    return TemplateCache(store, **kwargs)  # type: ignore[arg-type]


async def test_a_pinned_job_gets_its_versions_and_an_unpinned_one_the_latest() -> None:
    store = Versions(version("en", 1), version("de", 2), version("en", 3))
    templates = cache(store)
    assert (await templates.resolve("notice", "en", as_of=2)).version == 1
    assert (await templates.resolve("notice", "de", as_of=2)).version == 2
    assert (await templates.resolve("notice", "fr", as_of=2)).version == 1  # falls back to en
    assert (await templates.resolve("notice", None, as_of=3)).version == 3
    assert (await templates.resolve("notice", "en")).version == 3


async def test_lookups_are_cached_per_pin_for_the_ttl() -> None:
    store = Versions(version("en", 1))
    templates = cache(store, ttl=3600)
    for _ in range(3):
        await templates.resolve("notice", "en", as_of=1)
        await templates.resolve("notice", "en")
    assert store.lookups == [("notice", "en", 1), ("notice", "en", None)]

    store.templates.append(version("en", 2))
    assert (await templates.resolve("notice", "en")).version == 1  # until the ttl passes
    fresh = cache(store, ttl=0)
    assert (await fresh.resolve("notice", "en")).version == 2
    assert (await fresh.resolve("notice", "en", as_of=1)).version == 1


async def test_the_cache_keeps_a_bounded_number_of_entries() -> None:
    store = Versions(*(version("en", n) for n in range(1, 6)))
    templates = cache(store, ttl=3600, max_entries=2)
    for pin in (1, 2, 3):
        await templates.resolve("notice", "en", as_of=pin)
    await templates.resolve("notice", "en", as_of=3)  # still held
    await templates.resolve("notice", "en", as_of=1)  # dropped first: looked up again
    assert [lookup[2] for lookup in store.lookups] == [1, 2, 3, 1]


async def test_missing_everywhere_is_permanent_and_says_what_was_looked_for() -> None:
    templates = cache(Versions(version("de", 4)))
    with pytest.raises(PermanentError, match="template 'notice' does not exist"):
        await templates.resolve("notice", "en")
    with pytest.raises(
        PermanentError,
        match=r"no version at or below 3 \(the job's pinned version\) in locale 'de' or 'en'",
    ):
        await templates.resolve("notice", "de", as_of=3)
