"""The web dashboard served by `neuroq serve` at `/`; `routes` holds it for now.

The app needs three names: `create_dashboard` builds the state, `ROUTES` serves it, and
`Dashboard` is that state (`app.state.dashboard`, whose `history.run` the lifespan runs).
"""

from neuroq.api.dashboard.routes import ROUTES, Dashboard, create_dashboard

__all__ = ["ROUTES", "Dashboard", "create_dashboard"]
