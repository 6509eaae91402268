"""The SSH operator console: public-key login only, a namespace of named operator commands
(``sessions()``, ``meters()``, ``read(meter)``, ``tasks()``, ``run(task)``, ``stats()``,
``events(meter)``, ``spool()``, ``alarms()``, ``help()``) with readable output, by role:
viewers get the commands that look, operators also those that act (read, run, command,
approve, reject), both through a line-command interpreter that evaluates nothing
(fep.operator.console_lines); only admins get the Python prompt (``ctx`` is the daemon's
OperatorContext).

twisted.conch's own manhole service takes passwords only, so this one is put together from
its parts: a TerminalRealm whose sessions run a console per login, a Portal with one
public-key checker over the authorized_keys file (read again at each login, so removing a
key takes effect at once; each key names its operator and role, fep.operator.console_keys),
and a ConchFactory with its own host key dicts (Ed25519, ECDSA and RSA, made with mode 0600
at first start; ssh-rsa SHA-1 and DSA signatures refused). Every line an operator enters is
logged with the key's operator (never the SSH user name) and its SHA256 fingerprint.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.conch import manhole, manhole_ssh
from twisted.conch.insults import insults
from twisted.conch.interfaces import ISession
from twisted.conch.ssh.keys import Key
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError
from fep.model import IntervalBlock, MeterEvent, Reading
from fep.operator import commands
from fep.operator.console_analysis import NAMES as ANALYSIS_NAMES
from fep.operator.console_analysis import AnalysisCommands
from fep.operator.console_edits import NAMES as EDIT_NAMES
from fep.operator.console_edits import EditCommands
from fep.operator.console_keys import (
    AuthorizedOperators,
    OperatorKeyChecker,
    host_key_file,
    host_keys,
    identity,
    signature_algorithms,
)
from fep.operator.console_lines import LineConsole
from fep.operator.context import OperatorContext
from fep.operator.stats import gather

log = Logger(namespace="fep.operator.manhole")


# -- readable output ---------------------------------------------------------------------------


class Table:
    """Rows shown as an aligned text table (its repr, which the console prints)."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                 title: str = "") -> None:
        self.rows = list(rows)
        self.columns = list(columns)
        self.title = title

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    @staticmethod
    def _cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%SZ")
        return str(value)

    def text(self) -> str:
        cells = [[self._cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)
        if not cells:
            lines.append("(none)")
        return "\r\n".join(lines)

    def __repr__(self) -> str:
        return "\r\n" + self.text()


def _pairs(data: dict[str, Any], title: str) -> Table:
    rows = []
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                rows.append({"name": f"{key}.{sub}", "value": v})
        elif isinstance(value, list):
            rows.append({"name": key, "value": f"{len(value)} entries"})
        else:
            rows.append({"name": key, "value": value})
    return Table(rows, ["name", "value"], title)


# -- the command namespace -----------------------------------------------------------------------


class OperatorCommands(EditCommands, AnalysisCommands):
    """The named commands of one console login (the edits' from fep.operator.console_edits,
    the analyses' from fep.operator.console_analysis)."""

    def __init__(self, ctx: OperatorContext, operator: str, fingerprint: str,
                 role: str = "viewer") -> None:
        self.ctx = ctx
        self.operator = operator
        self.fingerprint = fingerprint
        self.role = role
        self.who = f"console:{operator}"

    def may(self, name: str) -> bool:
        """Whether this login's role allows the named command."""
        return commands.allowed(name, self.role)

    def _log(self, command: str, **fields: Any) -> None:
        log.info("operator {operator} ({fingerprint}) runs {command}",
                 operator=self.operator, fingerprint=self.fingerprint, command=command,
                 role=self.role, **fields)

    def help(self) -> Table:
        """This list."""
        rows = []
        for name in NAMES:
            if not self.may(name):
                continue
            doc = (getattr(self, name).__doc__ or "").strip().splitlines()[0]
            rows.append({"command": f"{name}()", "does": doc})
        return Table(rows, ["command", "does"], "fep operator commands (and Python: ctx)")

    def sessions(self) -> Table:
        """Meter sessions open now (polls under way, live inbound connections)."""
        self._log("sessions()")
        rows = [s.as_dict() for s in self.ctx.live_sessions()]
        return Table(rows, ["meter", "route", "protocol", "direction", "started"],
                     f"{len(rows)} sessions")

    def meters(self, pattern: str | None = None) -> Table:
        """The meter list with each meter's last read (pattern: id contains it)."""
        self._log("meters()", pattern=pattern)
        rows = []
        for meter in sorted(self.ctx.directory.all(), key=lambda m: m.id):
            if pattern and pattern not in meter.id:
                continue
            last = self.ctx.activity.last.get(meter.id)
            rows.append({
                "id": meter.id, "protocol": meter.protocol, "route": meter.route,
                "group": meter.metadata.get("group"),
                "last": last.time if last else None,
                "ok": None if last is None else ("yes" if last.ok else "NO"),
                "error": last.error if last else None,
            })
        return Table(rows, ["id", "protocol", "route", "group", "last", "ok", "error"],
                     f"{len(rows)} meters")

    def read(self, meter: str, **options: str) -> Deferred[Table]:
        """Read a meter now (its records are stored like a poll's); options: protocol
        settings, e.g. read("m1", dlt645_items="00010000")."""
        self._log("read()", meter=meter)

        async def run() -> Table:
            records = await commands.read_meter(
                self.ctx, meter, who=self.who, role=self.role,
                options={k: str(v) for k, v in options.items()})
            rows: list[dict[str, Any]] = []
            for r in records:
                if isinstance(r, Reading):
                    rows.append({"obis": str(r.obis), "value": r.value, "unit": r.unit_text,
                                 "time": r.time})
                elif isinstance(r, IntervalBlock):
                    rows.append({"obis": str(r.obis), "value": f"{len(r.values)} intervals",
                                 "unit": None, "time": r.start})
                elif isinstance(r, MeterEvent):
                    rows.append({"obis": r.code, "value": r.kind.value, "unit": r.severity.value,
                                 "time": r.time})
            return Table(rows, ["obis", "value", "unit", "time"],
                         f"meter {meter}: {len(records)} records")

        return Deferred.fromCoroutine(run())

    def events(self, meter: str, since: str | None = None) -> Deferred[Table]:
        """A meter's stored events (since: ISO-8601 time)."""
        self._log("events()", meter=meter)
        bound = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None

        async def run() -> Table:
            found = await self.ctx.store.events(meter, since=bound)
            rows = [{"time": e.time, "code": e.code, "kind": e.kind.value,
                     "severity": e.severity.value, "text": e.text} for e in found]
            return Table(rows, ["time", "code", "kind", "severity", "text"],
                         f"meter {meter}: {len(rows)} events")

        return Deferred.fromCoroutine(run())

    def tasks(self) -> Deferred[Table] | str:
        """The collection tasks (when the task scheduler is wired in)."""
        self._log("tasks()")
        scheduler = self.ctx.scheduler
        if scheduler is None:
            return "no task scheduler is wired into this daemon"

        async def run() -> Table:
            found = await scheduler.tasks()
            columns = sorted({k for t in found for k in t}, key=lambda k: (k != "name", k))
            return Table(found, columns or ["name"], f"{len(found)} tasks")

        return Deferred.fromCoroutine(run())

    def run(self, task: str) -> Deferred[Any]:
        """Start a task now."""
        self._log("run()", task=task)
        return Deferred.fromCoroutine(
            commands.run_task(self.ctx, task, who=self.who, role=self.role))

    def commands(self, limit: int = 20) -> Deferred[Table] | str:
        """The newest meter commands with their status and approvals."""
        self._log("commands()")
        scheduler = self.ctx.scheduler
        if scheduler is None:
            return "no task scheduler is wired into this daemon"

        async def run() -> Table:
            found = await scheduler.commands(int(limit))
            columns = sorted({k for c in found for k in c}, key=lambda k: (k != "id", k))
            return Table(found, columns or ["id"], f"{len(found)} commands")

        return Deferred.fromCoroutine(run())

    def command(self, meter: str, action: str, **params: Any) -> Deferred[Any]:
        """Ask for a meter command, e.g. command("m1", "disconnect"); it may wait for
        someone else's approve(id)."""
        self._log("command()", meter=meter, action=action)
        return Deferred.fromCoroutine(commands.request_command(
            self.ctx, meter, action, dict(params), who=self.who, role=self.role))

    def approve(self, command_id: int) -> Deferred[Any]:
        """Approve a meter command someone else asked for."""
        self._log("approve()", command_id=command_id)
        return Deferred.fromCoroutine(commands.approve_command(
            self.ctx, int(command_id), who=self.who, role=self.role))

    def reject(self, command_id: int, reason: str = "") -> Deferred[Any]:
        """Refuse a meter command that awaits approval."""
        self._log("reject()", command_id=command_id)
        return Deferred.fromCoroutine(commands.reject_command(
            self.ctx, int(command_id), reason, who=self.who, role=self.role))

    # -- control plans ------------------------------------------------------------------

    def plans(self, status: str | None = None, limit: int = 20) -> Deferred[Table]:
        """Control plans, newest first, with their progress (status: running, ...)."""
        self._log("plans()", status=status)

        async def run() -> Table:
            found = await commands.list_plans(self.ctx, who=self.who, role=self.role,
                                              limit=int(limit), status=status)
            rows = [_plan_row(p) for p in found]
            return Table(rows, PLAN_COLUMNS, f"{len(rows)} plans")

        return Deferred.fromCoroutine(run())

    def plan(self, plan_id: int) -> Deferred[Table]:
        """One plan: its definition, outcome counts, failed meters and audit trail."""
        self._log("plan()", plan_id=plan_id)

        async def run() -> Table:
            p = await commands.show_plan(self.ctx, int(plan_id), who=self.who, role=self.role)
            rows: list[dict[str, Any]] = [{"name": k, "value": p[k]} for k in (
                "name", "action", "params", "target", "status", "rate", "line_rate",
                "attempts", "retry_delay", "starts_at", "deadline_at", "created_by",
                "submitted_by", "approved_by", "reason", "started_at", "finished_at")]
            rows.append({"name": "progress", "value": _bar(p)})
            rows += [{"name": f"meters {state}", "value": n}
                     for state, n in p["counts"].items() if n]
            rows += [{"name": f"  {o['meter']}", "value": f"{o['state']}: {o['reason']}"}
                     for o in p["outcomes"] if o["state"] in ("failed", "not-supported")][:50]
            rows += [{"name": f"{a['at']} {a['who']}", "value": f"{a['action']} {a['detail']}"}
                     for a in p["audit"]]
            return Table(rows, ["name", "value"], f"plan {p['id']}")

        return Deferred.fromCoroutine(run())

    def plan_create(self, action: str, target: str, rate: float = 60, **spec: Any
                    ) -> Deferred[Table]:
        """Make a draft plan, e.g. plan_create("disconnect", "group:unpaid", rate=120,
        line_rate=10, attempts=3, retry_delay=60, deadline="2h", start="...", name="...");
        params of the command as params={...}."""
        self._log("plan_create()", action=action, target=target)

        async def run() -> Table:
            made = await commands.create_plan(
                self.ctx, {**spec, "action": action, "target": target, "rate": rate},
                who=self.who, role=self.role)
            return Table([_plan_row(made)], PLAN_COLUMNS, f"plan {made['id']} made (draft)")

        return Deferred.fromCoroutine(run())

    def _plan_step(self, step: str, plan_id: int, reason: str = "") -> Deferred[Table]:
        self._log(f"plan_{step}()", plan_id=plan_id)

        async def run() -> Table:
            p = await commands.plan_step(self.ctx, int(plan_id), step, who=self.who,
                                         role=self.role, reason=str(reason))
            return Table([_plan_row(p)], PLAN_COLUMNS, f"plan {p['id']} {p['status']}")

        return Deferred.fromCoroutine(run())

    def plan_submit(self, plan_id: int) -> Deferred[Table]:
        """Submit a draft plan for approval."""
        return self._plan_step("submit", plan_id)

    def plan_approve(self, plan_id: int) -> Deferred[Table]:
        """Approve a plan someone else submitted."""
        return self._plan_step("approve", plan_id)

    def plan_reject(self, plan_id: int, reason: str = "") -> Deferred[Table]:
        """Reject a plan someone else submitted."""
        return self._plan_step("reject", plan_id, reason)

    def plan_start(self, plan_id: int) -> Deferred[Table]:
        """Start an approved plan, or resume a paused one."""
        return self._plan_step("start", plan_id)

    def plan_pause(self, plan_id: int) -> Deferred[Table]:
        """Pause a running plan (commands not yet started are withheld)."""
        return self._plan_step("pause", plan_id)

    def plan_cancel(self, plan_id: int, reason: str = "") -> Deferred[Table]:
        """Cancel a plan (the meters not yet done are skipped)."""
        return self._plan_step("cancel", plan_id, reason)

    def stats(self) -> Table:
        """Counters: meters, reads, router and spool, pushes, alarms, northbound."""
        self._log("stats()")
        return _pairs(gather(self.ctx), "statistics")

    def spool(self) -> Table:
        """The spool: records waiting for the store, committed, set aside."""
        self._log("spool()")
        router: Any = self.ctx.router
        data = {
            "depth": router.depth() if hasattr(router, "depth") else None,
            "submitted": getattr(router, "submitted", None),
            "committed": getattr(router, "committed", None),
            "rejected": getattr(router, "rejected", None),
            "store_failures": getattr(router, "store_failures", None),
        }
        spool = getattr(router, "spool", None)
        if spool is not None:
            data["directory"] = str(spool.directory)
            data["rejected_file"] = str(spool.rejected_path)
        return _pairs(data, "spool")

    def alarms(self, limit: int = 20) -> Deferred[Table] | str:
        """The newest alarms."""
        self._log("alarms()")
        engine = self.ctx.alarms
        if engine is None:
            return "alarms are off in this daemon"

        async def run() -> Table:
            found = await engine.recent(limit=int(limit))
            rows = [a.as_dict() for a in found]
            return Table(rows, ["time", "meter", "kind", "severity", "count", "text"],
                         f"{len(rows)} alarms")

        return Deferred.fromCoroutine(run())


NAMES = ("help", "sessions", "meters", "read", "events", "tasks", "run", "commands", "command",
         "approve", "reject", "stats", "spool", "alarms", "plans", "plan", "plan_create",
         "plan_submit", "plan_approve", "plan_reject", "plan_start", "plan_pause",
         "plan_cancel", *EDIT_NAMES, *ANALYSIS_NAMES)

PLAN_COLUMNS = ["id", "name", "action", "status", "meters", "progress", "done", "failed",
                "not-supported", "skipped", "by", "approved_by"]


def _bar(plan: dict[str, Any], width: int = 20) -> str:
    """A text progress bar: ``[#####.....] 12/40``."""
    total = int(plan["meters"])
    ended = total - plan["counts"].get("pending", 0) - plan["counts"].get("released", 0)
    filled = round(width * ended / total) if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {ended}/{total}"


def _plan_row(plan: dict[str, Any]) -> dict[str, Any]:
    counts = plan["counts"]
    return {"id": plan["id"], "name": plan["name"], "action": plan["action"],
            "status": plan["status"], "meters": plan["meters"], "progress": _bar(plan, 10),
            "done": counts.get("done", 0), "failed": counts.get("failed", 0),
            "not-supported": counts.get("not-supported", 0),
            "skipped": counts.get("skipped", 0), "by": plan["created_by"],
            "approved_by": plan["approved_by"]}


def namespace_for(ctx: OperatorContext, operator: str, fingerprint: str,
                  role: str = "admin") -> dict[str, Any]:
    """The Python namespace of an admin's console (the named commands, ``ctx``)."""
    cmds = OperatorCommands(ctx, operator, fingerprint, role)
    space: dict[str, Any] = {name: getattr(cmds, name) for name in NAMES}
    space["ctx"] = ctx
    space["console"] = cmds
    return space


# -- the terminal side ----------------------------------------------------------------------------


class OperatorManhole(manhole.ColoredManhole):
    """A ColoredManhole that logs every line with who entered it."""

    def __init__(self, namespace: dict[str, Any], operator: str, fingerprint: str) -> None:
        super().__init__(namespace)
        self.operator = operator
        self.fingerprint = fingerprint

    def connectionMade(self) -> None:
        super().connectionMade()
        log.info("operator {operator} ({role}) logged in to the console with key "
                 "{fingerprint}", operator=self.operator, role="admin",
                 fingerprint=self.fingerprint)
        self.terminal.write(b"fep operator console: help() lists the commands\r\n")
        self.terminal.write(self.ps[self.pn])

    def lineReceived(self, line: bytes) -> None:
        log.info("console {operator} ({fingerprint}): {line}", operator=self.operator,
                 fingerprint=self.fingerprint, line=line.decode("utf-8", "replace"))
        super().lineReceived(line)

    def connectionLost(self, reason: Any) -> None:
        log.info("operator {operator} left the console", operator=self.operator,
                 fingerprint=self.fingerprint)
        super().connectionLost(reason)


class _SessionTransport(manhole_ssh.TerminalSessionTransport):
    """conch's terminal session glue, except that ending the console (Ctrl-D) sends exit
    status 0 before closing the channel, so the SSH client reports a normal exit."""

    def __init__(self, proto: Any, chainedProtocol: Any, avatar: Any, width: int,
                 height: int) -> None:
        self.proto = proto
        self.avatar = avatar
        self.chainedProtocol = chainedProtocol
        channel = proto.session

        def close_channel() -> None:
            avatar.conn.sendRequest(channel, b"exit-status", struct.pack(">L", 0))
            avatar.conn.sendClose(channel)

        proto.makeConnection(manhole_ssh._Glue(
            write=chainedProtocol.dataReceived, loseConnection=close_channel,
            name="SSH Proto Transport"))
        chainedProtocol.makeConnection(manhole_ssh._Glue(
            write=proto.write, loseConnection=lambda: proto.loseConnection(),
            name="Chained Proto Transport"))
        chainedProtocol.terminalProtocol.terminalSize(width, height)


@implementer(IRealm)
class OperatorRealm(manhole_ssh.TerminalRealm):
    """Each login gets its own namespace, bound to who logged in."""

    transportFactory = _SessionTransport

    def __init__(self, ctx: OperatorContext) -> None:
        super().__init__()
        self.ctx = ctx

    def _getAvatar(self, avatarId: bytes) -> Any:
        user = super()._getAvatar(avatarId)
        operator, role, fingerprint = identity(avatarId)
        ctx = self.ctx

        def protocol() -> insults.ServerProtocol:
            if role == "admin":
                space = namespace_for(ctx, operator, fingerprint, role)
                return insults.ServerProtocol(OperatorManhole, space, operator, fingerprint)
            # Viewers and operators: named commands only, nothing evaluated.
            cmds = OperatorCommands(ctx, operator, fingerprint, role)
            return insults.ServerProtocol(LineConsole, cmds, NAMES, cmds.may, operator, role,
                                          fingerprint)

        session = user.original.getComponent(ISession)
        session.chainedProtocolFactory = protocol
        return user


def host_key(path: Path) -> Key:
    """The console's Ed25519 host key, made (0600) if the file does not exist yet (the
    ECDSA and RSA ones beside it: fep.operator.console_keys.host_keys)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return host_key_file(path, ed25519.Ed25519PrivateKey.generate)


class OperatorConsoleFactory(manhole_ssh.ConchFactory):
    """A ConchFactory that advertises (as host key types and server-sig-algs) only the
    signature algorithms the console accepts: no ssh-rsa (SHA-1), no ssh-dss."""

    def buildProtocol(self, addr: Any) -> Any:
        t = super().buildProtocol(addr)
        held: Any = self.privateKeys.values()  # Keys (conch's stubs say bytes)
        t.supportedPublicKeys = signature_algorithms(held)
        return t


def manhole_factory(ctx: OperatorContext, authorized_keys: Path,
                    host_key_path: Path) -> manhole_ssh.ConchFactory:
    if not str(authorized_keys) or not authorized_keys.is_file():
        raise ConfigError("the console needs an authorized_keys file of operator keys",
                          section="manhole", key="authorized_keys")
    keys = host_keys(host_key_path)
    portal = Portal(OperatorRealm(ctx), [OperatorKeyChecker(AuthorizedOperators(authorized_keys))])
    factory = OperatorConsoleFactory(portal)
    # Instance dicts: the class attributes are shared by every ConchFactory in the process.
    pairs: Any = ({kind: key.public() for kind, key in keys.items()}, dict(keys))
    factory.publicKeys, factory.privateKeys = pairs
    factory.noisy = False
    return factory

