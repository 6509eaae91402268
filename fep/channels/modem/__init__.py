"""AT-command modems: the sans-IO Hayes AT engine (``at``), its Twisted line adapter, PSTN
dial-up and the modem pool, and the SMS channel."""
