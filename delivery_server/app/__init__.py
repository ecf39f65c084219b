"""The composition root (STYLE rule 1): the one place that turns settings into adapters and
passes them to the core. ``adapters`` opens each adapter from the settings; ``roles`` runs
the loops of a role; the CLI builds everything through here.
"""

from delivery_server.app.adapters import open_attachments, open_store, upgrade_database
from delivery_server.app.channels import channel_rules
from delivery_server.app.roles import Listening, serve

__all__ = [
    "Listening",
    "channel_rules",
    "open_attachments",
    "open_store",
    "serve",
    "upgrade_database",
]
