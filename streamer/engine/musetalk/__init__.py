"""MuseTalk v1.5: its audio windows, model folder, export and streaming audio features.

Importing this package imports nothing heavy; :mod:`streamer.engine.musetalk.export` alone
needs PyTorch, diffusers and transformers (the ``export`` extra).
"""
