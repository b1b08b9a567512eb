"""The asyncio shell around the pure core. Its rooms, top to bottom (imports only point down,
checked by import-linter):

- ``commands/``: ``serve`` and ``live``;
- ``app.py``: the composition root (the aiohttp app, the pages, health, metrics);
- ``calls/``, ``channels/``, ``jobs/``: the features, each with its registry and routes;
- ``config.py``: every setting;
- ``http/`` (errors, bodies, access, protocol, OpenAPI) and ``media/`` (the one clock, the
  scheduler, the inference thread, peers, tracks, SDP, ICE, metrics).
"""
