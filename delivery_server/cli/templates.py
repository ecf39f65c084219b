"""``delivery-server templates ...``: push template files, list them, try one out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from delivery_server.cli._common import EXIT_OK, admin_logging, positive_int, settings_for
from delivery_server.cli.output import print_json
from delivery_server.errors import NotFoundError
from delivery_server.models import Template
from delivery_server.ports import Store
from delivery_server.renderer import Renderer
from delivery_server.template_files import load_template_file, template_paths


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``templates`` and its subcommands to the command tree."""
    templates = commands.add_parser(
        "templates", parents=[common], help="push, list and render templates"
    )
    sub = templates.add_subparsers(title="commands", metavar="COMMAND", required=True)

    push = sub.add_parser(
        "push",
        parents=[common],
        help="store a new version of each template file (NAME.LOCALE.toml)",
    )
    push.add_argument(
        "paths",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="NAME.LOCALE.toml files, or directories of them",
    )
    push.set_defaults(handler=_push)

    listing = sub.add_parser("list", parents=[common], help="the latest version of each")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(handler=_list)

    render = sub.add_parser(
        "render",
        parents=[common],
        help="render the latest version (or --version V) with given variables",
    )
    render.add_argument("name", metavar="NAME")
    render.add_argument(
        "--vars",
        type=json_object,
        default={},
        metavar="JSON",
        help="variables as a JSON object, or @file.json",
    )
    render.add_argument("--locale", default="en", metavar="L", help="default: en")
    render.add_argument(
        "--version",
        type=positive_int(2**31 - 1),
        metavar="V",
        help="the version a job pinned at V renders: V itself, or the locale's newest "
        "below it (jobs show gives a job's version; versions count across locales)",
    )
    render.set_defaults(handler=_render)


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object, inline or ``@path`` to a file holding one."""
    try:
        source = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
        value = json.loads(source)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, like {"name": "Ann"}')
    return value


async def _push(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    # Every file is checked before any is stored: a push is all or nothing.
    files = [load_template_file(path) for path in template_paths(args.paths)]
    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        for file in files:
            stored = await store.add_template(file.template)
            print(f"{stored.name} ({stored.locale}): version {stored.version} from {file.path}")
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        templates = sorted(await store.templates(), key=lambda t: (t.name, t.locale))
    if args.json:
        print_json(
            [
                {
                    "name": t.name,
                    "locale": t.locale,
                    "version": t.version,
                    "created_at": t.created_at.isoformat() + "Z" if t.created_at else None,
                }
                for t in templates
            ]
        )
        return EXIT_OK
    table = Table(
        title="templates" if templates else "templates: none yet",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("name", "locale", "version", "html", "created (UTC)"):
        table.add_column(column)
    for t in templates:
        created = f"{t.created_at:%Y-%m-%d %H:%M}" if t.created_at else ""
        table.add_row(
            Text(t.name), t.locale, str(t.version), "yes" if t.html_body else "no", created
        )
    Console().print(table)
    return EXIT_OK


async def latest_template(
    store: Store, name: str, locale: str, as_of: int | None = None
) -> Template:
    """The latest version in ``locale`` (at or below ``as_of`` when given), or a
    ``NotFoundError`` that says what exists."""
    template = await store.template(name, locale, as_of)
    if template is not None:
        return template
    latest = [t for t in await store.templates() if t.name == name]
    if not latest:
        raise NotFoundError(f"template {name!r} does not exist")
    locales = sorted(t.locale for t in latest)
    if locale not in locales:
        raise NotFoundError(
            f"template {name!r} has no locale {locale!r} (it has: {', '.join(locales)})"
        )
    # The locale exists, only not as early as ``as_of``.
    first = await store.template(name, locale, None)
    raise NotFoundError(
        f"template {name!r} ({locale}) has no version at or below {as_of} "
        f"(its latest is {first.version if first else '?'})"
    )


async def _render(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        template = await latest_template(store, args.name, args.locale, args.version)
    # A missing variable is a PermanentError: "template 'statement': 'balance' is undefined".
    rendered = Renderer(settings.max_rendered_bytes).render(template, args.vars)
    print(f"Subject: {rendered.subject}")
    if args.version is not None and template.version != args.version:
        # Versions count across locales: V may be another locale's push.
        sys.stderr.write(
            f"version {args.version} is not a version of {template.locale}: "
            f"v{template.version} is the newest below it\n"
        )
    print(f"\n--- text ({template.name} {template.locale} v{template.version}) ---")
    print(rendered.text_body.rstrip("\n"))
    if rendered.html_body is not None:
        print("\n--- html ---")
        print(rendered.html_body.rstrip("\n"))
    return EXIT_OK
