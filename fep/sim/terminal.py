"""A simulated GPRS terminal (DTU) that takes its configuration as a terminal profile says
(fep.channels.terminals, ``etc/terminals``): by text message through the simulated GSM
network (fep.sim.gsm_modem) and by AT pass-through on its own TCP session. It checks the
password, applies the settings (APN, master station, second master station, heartbeat,
mode), answers as the profile expects, and on the restart command closes its session and
dials the master station it is now set to (the second one when the first does not answer),
sending its registration there.

It wraps a SimulatedGprsModem (fep.sim.gprs_modem): the meter behind it answers everything
that is not the terminal's own configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from fep.channels.terminals import SETTINGS, Template, TerminalProfile
from fep.sim.gprs_modem import ModemConnection, SimulatedGprsModem
from fep.sim.gsm_modem import GsmNetwork, SentMessage

log = Logger(namespace="fep.sim.terminal")


class SimulatedTerminal:
    """``settings`` are the terminal's current ones; ``applied`` lists (way, values) of each
    configuration it took, ``refused`` (way, why) of each it refused, ``dialled`` every
    (host, port) it dialled after a restart and ``registered`` those where it got through."""

    def __init__(
        self,
        reactor: Any,
        modem: SimulatedGprsModem,
        profile: TerminalProfile,
        password: str,
        *,
        host: str = "127.0.0.1",
        port: int = 4070,
        network: GsmNetwork | None = None,
        number: str | None = None,
        restart_delay: float = 0.2,
        ok_reply: str = "OK",
        refused_reply: str = "PASSWORD ERROR",
        endpoint_for: Callable[[str, int], Any] | None = None,
    ) -> None:
        self.reactor: IReactorTime = reactor
        self.modem = modem
        self.profile = profile
        self.password = password
        self.settings: dict[str, Any] = {"apn": "internet", "host": host, "port": port,
                                         "host2": None, "port2": None, "heartbeat": 60,
                                         "mode": profile.modes[0] if profile.modes else None}
        self.restart_delay = restart_delay
        self.ok_reply = ok_reply
        self.refused_reply = refused_reply
        self.endpoint_for = endpoint_for or (
            lambda h, p: TCP4ClientEndpoint(reactor, h, p, timeout=5))
        self.applied: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, str]] = []
        self.dialled: list[tuple[str, int]] = []
        self.registered: list[tuple[str, int]] = []
        self.restarts = 0
        self.network = network
        self.number = number
        if network is not None and number is not None:
            network.route(number, self._text)
        modem.intercept = self._session_bytes
        self._config_mode = False
        self._authed = False
        self._buffer = b""

    # -- configuration texts --------------------------------------------------------------

    def _reply(self, to: str, text: str) -> None:
        if self.network is not None and self.number is not None and (
                self.profile.sms is not None and self.profile.sms.reply):
            self.network.deliver(to, text, self.number)

    def _text(self, message: SentMessage) -> None:
        sms = self.profile.sms
        if sms is None:
            return
        fields = sms.text.match(message.text.strip())
        if fields is None:
            self.refused.append(("sms", "not a configuration text"))
            self._reply(message.sender, "ERROR")
            return
        if self.profile.password and fields.get("password") != self.password:
            self.refused.append(("sms", "wrong password"))
            self._reply(message.sender, self.refused_reply)
            return
        values, restart = self._commands(fields["commands"].split(sms.separator),
                                         sms.separator, "sms")
        if values is None:
            self.refused.append(("sms", "unknown command"))
            self._reply(message.sender, "ERROR")
            return
        self._apply("sms", values)
        self._reply(message.sender, self.ok_reply)
        if restart:
            self._restart()

    def _commands(self, pieces: list[str], separator: str, way: str
                  ) -> tuple[dict[str, Any] | None, bool]:
        """The settings a list of command texts sets and whether it ends in a restart;
        (None, False) when one is not the model's."""
        values: dict[str, Any] = {}
        restart = False
        n = 0
        while n < len(pieces):
            for template in self._templates(way):
                width = template.text.count(separator) + 1 if separator else 1
                got = template.match(separator.join(pieces[n:n + width]))
                if got is not None:
                    values.update(got)
                    n += width
                    break
            else:
                restart_template = (self.profile.restart_sms if way == "sms"
                                    else self.profile.restart_tcp)
                if restart_template is not None and pieces[n] == restart_template.text:
                    restart = True
                    n += 1
                    continue
                return None, False
        return values, restart

    def _templates(self, way: str) -> list[Template]:
        out = []
        for setting in self.profile.settings:
            template = setting.sms if way == "sms" else setting.tcp
            if template is not None:
                out.append(template)
        return out

    def _apply(self, way: str, values: dict[str, Any]) -> None:
        for key in ("port", "port2", "heartbeat"):
            if key in values:
                values[key] = int(values[key])
        self.settings.update({k: v for k, v in values.items() if k in SETTINGS})
        self.applied.append((way, values))
        log.info("terminal {imei}: {way} configuration {values}", imei=self.modem.spec.imei,
                 way=way, values=values)

    # -- AT pass-through on the session ---------------------------------------------------

    def _session_bytes(self, connection: ModemConnection, data: bytes) -> bool:
        tcp = self.profile.tcp
        if tcp is None:
            return False
        if not self._config_mode:
            if tcp.enter:
                if data.decode("latin-1") != tcp.enter:
                    return False
                self._config_mode = True
                self._authed = False
                self._buffer = b""
                self._write(connection, "OK")
                return True
            # In-band: lines that carry the model's configuration line.
            text = data.decode("latin-1")
            if not text.endswith(tcp.line_end) or tcp.line.match(
                    text.split(tcp.line_end)[0]) is None:
                return False
        self._buffer += data
        end = tcp.line_end.encode("latin-1")
        while end in self._buffer:
            raw, self._buffer = self._buffer.split(end, 1)
            self._session_line(connection, raw.decode("latin-1").strip())
        return True

    def _write(self, connection: ModemConnection, line: str) -> None:
        assert self.profile.tcp is not None
        end = self.profile.tcp.line_end
        connection.write((end + line + end).encode("latin-1"))

    def _session_line(self, connection: ModemConnection, line: str) -> None:
        tcp = self.profile.tcp
        assert tcp is not None
        if not line:
            return
        if tcp.login is not None:
            login = tcp.login.match(line)
            if login is not None:
                self._authed = login.get("password") == self.password
                if not self._authed:
                    self.refused.append(("tcp", "wrong password"))
                self._write(connection, "OK" if self._authed else "ERROR")
                return
        if tcp.leave and line == tcp.leave:
            self._config_mode = False
            self._write(connection, "OK")
            return
        fields = tcp.line.match(line)
        if fields is None:
            self._write(connection, "ERROR")
            return
        if "password" in fields:
            if fields["password"] != self.password:
                self.refused.append(("tcp", "wrong password"))
                self._write(connection, "PASSWORD ERROR")
                return
        elif self.profile.password and not self._authed:
            self.refused.append(("tcp", "no password given"))
            self._write(connection, "ERROR")
            return
        values, restart = self._commands([fields["command"]], "", "tcp")
        if values is None:
            self._write(connection, "ERROR")
            return
        if values:
            self._apply("tcp", values)
        self._write(connection, "OK")
        if restart:
            self._restart()

    # -- restart --------------------------------------------------------------------------

    def _restart(self) -> None:
        """Close the session (its answer written first) and dial the master station."""
        self.restarts += 1
        self._config_mode = False
        self._buffer = b""
        connection = self.modem.connection
        if connection is not None and connection.transport is not None:
            connection.transport.loseConnection()
        self.reactor.callLater(self.restart_delay, self._dial, 0)

    def _dial(self, which: int) -> None:
        servers = [(self.settings["host"], self.settings["port"])]
        if self.settings.get("host2") and self.settings.get("port2"):
            servers.append((self.settings["host2"], self.settings["port2"]))
        if which >= len(servers):
            log.warn("terminal {imei}: no master station answers", imei=self.modem.spec.imei)
            return
        host, port = servers[which]
        self.dialled.append((host, port))
        self.modem.endpoint = self.endpoint_for(host, port)

        def got_through(_: object) -> None:
            self.registered.append((host, port))

        def failed(_: object) -> None:
            self._dial(which + 1)

        self.modem.connect().addCallbacks(got_through, failed)
