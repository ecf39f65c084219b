"""``delivery-server tokens ...``: the API's bearer tokens (DESIGN §6).

``create`` prints the new token once, alone on the last line of its output; only its
SHA-256 is stored (see ``api_tokens``), so a lost token is revoked and replaced, never
shown again. ``read`` tokens look; ``operate`` tokens also pause, resume, cancel, restart,
create jobs and change the suppression list.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from delivery_server.api_tokens import TokenScope, mint_token, valid_token_name
from delivery_server.cli._common import EXIT_OK, admin_logging, settings_for
from delivery_server.cli.output import print_json
from delivery_server.errors import NotFoundError


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``tokens`` and its subcommands to the command tree."""
    group = commands.add_parser("tokens", parents=[common], help="API tokens (create, revoke)")
    sub = group.add_subparsers(title="commands", metavar="COMMAND", required=True)

    create = sub.add_parser("create", parents=[common], help="a new token, printed once")
    create.add_argument("--name", required=True, type=token_name, metavar="N")
    create.add_argument(
        "--scope",
        type=TokenScope,
        choices=list(TokenScope),
        default=TokenScope.READ,
        help="read: look only; operate: also act on jobs and suppressions (default: read)",
    )
    create.set_defaults(handler=_create)

    listing = sub.add_parser("list", parents=[common], help="every token (never the secret)")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(handler=_list)

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a token at once")
    revoke.add_argument("name", type=token_name, metavar="NAME")
    revoke.set_defaults(handler=_revoke)


def token_name(text: str) -> str:
    """An argparse type: 1 to 64 of letters, digits, ``.``, ``_`` and ``-``."""
    if not valid_token_name(text):
        raise argparse.ArgumentTypeError(
            "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return text


async def _create(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    secret, hashed = mint_token()
    async with open_store(settings) as store:
        token = await store.add_api_token(args.name, args.scope, hashed)
    print(f"token {token.name!r} created (scope {token.scope}); it is shown only this once:")
    print(secret)
    return EXIT_OK


def _time(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else ""


async def _list(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        tokens = await store.api_tokens()
    if args.json:
        print_json(
            [
                {
                    "name": t.name,
                    "scope": t.scope.value,
                    "created_at": t.created_at.isoformat() + "Z",
                    "last_used_at": t.last_used_at.isoformat() + "Z" if t.last_used_at else None,
                    "revoked_at": t.revoked_at.isoformat() + "Z" if t.revoked_at else None,
                }
                for t in tokens
            ]
        )
        return EXIT_OK
    table = Table(
        title="tokens" if tokens else "tokens: none", title_justify="left", box=box.SIMPLE_HEAD
    )
    for column in ("name", "scope", "created (UTC)", "last used (UTC)", "revoked (UTC)"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            Text(t.name),
            t.scope.value,
            _time(t.created_at),
            _time(t.last_used_at),
            _time(t.revoked_at),
        )
    Console().print(table)
    return EXIT_OK


async def _revoke(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        if not await store.revoke_api_token(args.name):
            raise NotFoundError(f"no active token named {args.name!r}")
    print(f"token {args.name!r} revoked")
    return EXIT_OK
