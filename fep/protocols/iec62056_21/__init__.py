"""IEC 62056-21 (ex IEC 61107) mode C: framing, readout parsing, the client state machine and
its Twisted session.

``frames``, ``readout`` and ``client`` are sans-IO (bytes in, typed events out); ``session``
drives them over a Twisted byte pipe.
"""

from __future__ import annotations
