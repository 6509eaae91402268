"""A fleet of simulated meters in a process of its own, each on a loopback TCP port of its
own (one line each): what the collection benchmark reads, so that the meters' work is not
counted as the collector's (real meters do their own work).

``python -m fep.sim.fleet --protocol dlms --meters 1000`` serves the meters, then writes one
line to stdout: a JSON list of ``{"port": PORT, "address": ADDRESS}``, one per meter in
order (the address is the DL/T 645 meter address, empty for DLMS). It serves until its
stdin closes (the parent ends or closes it), so it never outlives the benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from fep.reactors import IConnectingReactor

PROTOCOLS = ("dlms", "dlt645")


def serve_fleet(reactor: IConnectingReactor, protocol: str, meters: int) -> list[dict[str, Any]]:
    """Listen for ``meters`` simulated meters of ``protocol`` on loopback ports; where each
    one is (port, and its address for DL/T 645)."""
    from fep.protocols.dlms.server import ServerSettings
    from fep.sim import dlms_meter
    from fep.sim.dlms import DlmsMeterServerFactory
    from fep.sim.dlt645 import Dlt645BusFactory, make_meters

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    out: list[dict[str, Any]] = []
    for n in range(meters):
        factory: Any
        address = ""
        if protocol == "dlt645":
            (sim645,) = make_meters(1, first_address=f"{n + 1:012d}")
            factory = Dlt645BusFactory([sim645], reactor)
            address = sim645.address
        else:
            factory = DlmsMeterServerFactory(
                dlms_meter.SimulatedDlmsMeter(serial=f"FEP{n:07d}"), ServerSettings())
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")
        out.append({"port": port.getHost().port, "address": address})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.fleet",
        description="Simulated meters on loopback TCP ports, until stdin closes.")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="dlms")
    parser.add_argument("--meters", type=int, default=100)
    args = parser.parse_args(argv)

    from twisted.internet import reactor as global_reactor
    from twisted.internet import stdio
    from twisted.internet.protocol import Protocol

    reactor: Any = global_reactor

    class UntilStdinCloses(Protocol):
        def connectionLost(self, reason: object = None) -> None:
            if reactor.running:
                reactor.stop()

    fleet = serve_fleet(reactor, args.protocol, args.meters)
    sys.stdout.write(json.dumps(fleet) + "\n")
    sys.stdout.flush()
    stdio.StandardIO(UntilStdinCloses())
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
