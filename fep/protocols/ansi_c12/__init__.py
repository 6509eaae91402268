"""ANSI C12.18 packets and services and C12.19 table decoders (sans-IO)."""
