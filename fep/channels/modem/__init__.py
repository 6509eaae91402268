"""AT-command modems: the AT engine, dial-up lines and SMS (sans-IO codecs, Twisted adapters)."""
