"""The media machinery every call and channel shares: the one clock, the scheduler, the
inference thread, the renderer seam, tracks, peers (one lifecycle), SDP checks, ICE, metrics."""
