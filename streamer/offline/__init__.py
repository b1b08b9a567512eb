"""Offline render: an audio file in, a lip-synced MP4 out, as fast as the hardware allows.

Pure and synchronous (no asyncio): the same features, model and compositor as the live path,
run in large batches. The ``render`` command and ``POST /render`` are thin shells over it.
Import from the modules (``audio``, ``mp4``, ``render``): this package imports nothing, so the
command line does not pay for numpy, PyAV and ONNX before it needs them.
"""
