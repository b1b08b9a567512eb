"""Channels: named avatar stages with one driver (WebSocket, microphone, call page or files)
and any number of viewers (WHEP, the view page)."""
