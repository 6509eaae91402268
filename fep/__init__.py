"""fep: a front-end processor for smart-meter head-end systems, on Twisted."""

__version__ = "0.1.0.dev0"
