"""The audio front end: ingest to 16 kHz mono, a bounded sample ring, Wav2Lip mel features.

Pure and synchronous: nothing here imports asyncio or aiortc.
"""
