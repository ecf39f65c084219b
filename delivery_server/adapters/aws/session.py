"""What every aiobotocore client of ours shares."""

from __future__ import annotations

from typing import Literal

from aiobotocore.session import AioSession

from delivery_server import __version__

# How the hot calls reach AWS (DELIVERY_AWS_HTTP): "direct" = ``direct`` (the client's
# endpoint, credentials, signer and error parser, without its per-call pipeline); "sdk" =
# through the aiobotocore client for every call.
AwsHttp = Literal["direct", "sdk"]


def fixed_user_agent(session: AioSession) -> str:
    """A User-Agent header computed once: ``<SDK, Python, OS> delivery-server/<version>``.

    Without one, botocore rebuilds (and sanitizes, component by component) its structured
    User-Agent string twice for every request: a sizeable share of the CPU of a
    ``SendEmail`` call, paid once per email (docs/benchmarks.md has the figures). A fixed
    header says the same thing, and names us."""
    return f"{session.user_agent()} delivery-server/{__version__}"
