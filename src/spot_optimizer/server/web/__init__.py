"""The web dashboard, served by the control plane at `/` (server-rendered HTML, a little vanilla JS)."""

from spot_optimizer.server.web.routes import router

__all__ = ["router"]
