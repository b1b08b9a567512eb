"""Client-side probes shared by the benchmarks and the soak: real aiortc client peers (calls
and WHEP viewers), the impaired network their audio crosses, the measuring peer and its clip,
the pure analyses (fps, freezes, mouth-to-lips, A/V offset, speech back) and the writer of
docs/benchmarks.md. Nothing here starts a server."""
