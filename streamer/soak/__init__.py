"""The soak harness: N real WebRTC client peers against a server for M minutes, measured.

``avatar-streamer soak --url URL --peers N --minutes M --out DIR``: each peer loops a spoken
clip with silences; every received frame and audio packet is measured as it arrives (nothing
is kept but numbers); the server's /metrics is scraped every few seconds. At the end
``report.json``, PNG plots and a one-screen summary are written, and the exit status says
whether every threshold held. ``analysis.py`` is the pure core (arrays in, figures out).
"""
