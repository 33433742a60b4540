"""What the dashboard keeps per app, built once by `create_dashboard` when the app is made.

The routes reach it as `request.app.state.dashboard`: the store; the metrics and activity that
the store's events feed; the sign-in `Sessions`; the plots' `History`, whose `run` the app's
lifespan keeps going; and the static files. Those are read once, through importlib.resources,
so they are served from memory and found in an installed wheel as well as in a checkout.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from importlib import resources

from neuroq.api.activity import Activity
from neuroq.api.auth import Keys
from neuroq.api.dashboard.history import History
from neuroq.api.dashboard.sessions import Sessions
from neuroq.api.metrics import Metrics
from neuroq.config import Settings
from neuroq.store.base import JobStore

#: the files under static/, by name, with their media types
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


@dataclass
class Dashboard:
    """Everything the routes share, as `request.app.state.dashboard`."""

    settings: Settings
    store: JobStore
    metrics: Metrics
    activity: Activity
    sessions: Sessions
    history: History
    static: dict[str, bytes]
    #: tags live versions, so a page that saw another server process never looks up to date
    instance: str = field(default_factory=lambda: secrets.token_hex(4))


def create_dashboard(
    settings: Settings, store: JobStore, metrics: Metrics, activity: Activity, keys: Keys
) -> Dashboard:
    """The dashboard's state; the app serves ROUTES with it as `app.state.dashboard` and runs
    `history.run` for as long as it serves (neuroq.api.app)."""
    history = History(settings.dashboard_sample_s)
    return Dashboard(settings, store, metrics, activity, Sessions(keys), history, _load_static())


def _load_static() -> dict[str, bytes]:
    folder = resources.files(__package__).joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}
