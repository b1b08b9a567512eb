"""The asyncio shell: the frame scheduler, WebRTC sessions and tracks, and the HTTP server."""
