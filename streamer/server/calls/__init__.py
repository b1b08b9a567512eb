"""Calls: one WebRTC peer per caller, its audio lip-synced back to it."""
