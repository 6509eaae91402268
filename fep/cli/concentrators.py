"""``fep concentrators sync ID``: the meter archive of a Q/GDW 1376.1 concentrator put in
step with the meter list (fep.collect.archive_sync). Asked of the running daemon on its
control socket (its channels: a concentrator on a gprs: route needs it); when no daemon
answers, done here over the concentrator's route.

Prints the report as one JSON object: the entries that were missing (``added``),
different (``changed``) and not wanted (``removed``) before, how many were written, and the
differences read back after (``after``); ``problems`` lists meters that could not be put in
the archive. Exit 0 when the archive is in step at the end, 3 when it is not (``--check``
only reports)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from fep.cli.arguments import with_store
from fep.cli.output import EXIT_METER, EXIT_OK, UsageError

if TYPE_CHECKING:
    from fep.reactors import IFepReactor


async def cmd_concentrators(reactor: IFepReactor, args: argparse.Namespace) -> int:
    import getpass

    from fep.cli import _control_socket
    from fep.operator.control import DaemonUnreachable, ask

    path = _control_socket(args)
    try:
        answer = await ask(reactor, path, "concentrator-sync", timeout=None,
                           concentrator=args.concentrator, repair=not args.check,
                           who=getpass.getuser())  # fmt: skip
    except DaemonUnreachable:
        print(f"fep: no daemon answers on {path}: synchronising concentrator "
              f"{args.concentrator} directly over its route", file=sys.stderr)  # fmt: skip
        report = await _sync_directly(reactor, args)
    else:
        report = dict(answer.get("report") or {})
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return EXIT_OK if report.get("in_step") else EXIT_METER


async def _sync_directly(reactor: IFepReactor, args: argparse.Namespace) -> dict[str, Any]:
    from fep.channels.routes import Channels, parse_route
    from fep.collect.archive_sync import sync
    from fep.collect.forwarding import add_forwarding
    from fep.protocols.registry import meter_protocol

    meters: list[Any] = []

    async def work(store: Any) -> int:
        meters.extend(await store.meters())
        return EXIT_OK

    await with_store(args, work)
    known = {m.id: m for m in meters}
    concentrator = known.get(args.concentrator)
    if concentrator is None:
        raise UsageError(f"no meter {args.concentrator!r} in the meter list")
    scheme = parse_route(concentrator.route).scheme
    if scheme in ("gprs", "dialup"):
        raise UsageError(f"concentrator {concentrator.id}: its route {concentrator.route} is "
                         f"reached through the daemon's {scheme} channel, and no daemon "
                         "answers")  # fmt: skip
    channels = Channels(reactor)
    add_forwarding(channels, known.get)
    report: dict[str, Any] = await sync(reactor, channels.endpoint_for,
                                        meter_protocol(concentrator.protocol), concentrator,
                                        meters, args.timeout, repair=not args.check)
    return report


def add_commands(sub: Any, parser_class: Any) -> None:
    conc = sub.add_parser("concentrators", help="Q/GDW 1376.1 concentrators")
    csub = conc.add_subparsers(dest="concentrators_command", required=True,
                               parser_class=parser_class)  # fmt: skip
    sync = csub.add_parser("sync", help="put a concentrator's meter archive in step with "
                           "the meter list (AFN 04/0A F10)")  # fmt: skip
    sync.add_argument("concentrator", help="the concentrator's meter id")
    sync.add_argument("--check", action="store_true",
                      help="only report the differences, write nothing")  # fmt: skip
    sync.add_argument("--timeout", type=float, default=10.0,
                      help="seconds to wait for each answer")  # fmt: skip
    sync.add_argument("--socket", help="the daemon's control socket (default: from --config)")
    conc.set_defaults(run=cmd_concentrators)
