"""DL/T 645 (2007 and 1997) meters: frames, services and data identifiers (sans-IO)."""
