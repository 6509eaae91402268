"""Meter protocols: sans-IO codecs and state machines, each with a thin Twisted session."""
