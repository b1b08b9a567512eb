"""Offline render jobs served next to live calls (``POST /render``)."""
