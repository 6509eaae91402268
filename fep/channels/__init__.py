"""Channels: turn a route into a connected byte pipe, within the medium's limits."""
