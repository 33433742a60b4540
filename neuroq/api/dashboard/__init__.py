"""The web dashboard served by `neuroq serve` at `/`.

Server-rendered HTML pages that `static/dashboard.js` (plain JS, no build step, no CDN) keeps
live by long-polling `/ui/live/...`; sign-in with a client API key. One module per concern:

    routes    the request handlers and ROUTES: read the store, check the session, answer
    render    all HTML, so all escaping: formatting helpers, the page frame, each page's parts
    forms     parsing what the browser sends: the job-list query, forms, JSON bodies
    sessions  sign-in session tokens, CSRF tokens and the same-site check
    history   the in-memory samples behind the overview's plots and rates
    state     `Dashboard`, what the routes share, and `create_dashboard`, which builds it

The job stream's server-sent events are shared with the client API (`neuroq.api.sse`).
`neuroq.api.app` uses the three names exported here.
"""

from neuroq.api.dashboard.routes import ROUTES
from neuroq.api.dashboard.state import Dashboard, create_dashboard

__all__ = ["ROUTES", "Dashboard", "create_dashboard"]
