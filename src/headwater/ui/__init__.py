"""The web UI: pages drawn on the server from the project's ports (no CDN, no build step),
served by ``headwater serve`` at ``/ui``."""
