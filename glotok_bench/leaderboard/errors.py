"""Errors of the leaderboard builder."""

from __future__ import annotations

from glotok_bench.errors import GlotokError


class LeaderboardError(GlotokError):
    """The records folder is missing, or the paper's numbers file is malformed."""
