"""The live decisions, pure and synchronous (time passed in): where each packet of audio
plays, when a frame renders, how the mouth fades, when the playout delay may change unheard.
The server's calls and channels run them per tick; the offline renderer plans with the same
rules. No asyncio, no aiortc."""
