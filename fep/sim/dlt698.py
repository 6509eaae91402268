"""A simulated DL/T 698.45 meter for tests and demos: a sans-IO meter model (its address,
energy registers that grow with wall time, voltages, currents, power, a clock, day and
15-minute frozen records, power-down event records) answering LINK, CONNECT, RELEASE, GET
Normal/NormalList/Record/RecordList/Next, and a Twisted server over TCP or a serial
device/pty. A meter in terminal mode logs in (LINK login) as soon as it is connected; a concentrator
answers PROXY reads of the meters behind it (``children``).

``python -m fep.sim.dlt698 --port 8698 --address 000000123456``
``python -m fep.sim.dlt698 --pty /dev/pts/5``
``python -m fep.sim.dlt698 --port 8698 --address 000000009999 --behind 000000000001``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError
from fep.protocols.dlt698.apdu import (
    ActionRequest,
    ActionResponse,
    ActionResult,
    Apdu,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    GetKind,
    GetRecord,
    GetRequest,
    GetResponse,
    LinkRequest,
    LinkResponse,
    LinkType,
    ProxyRequest,
    ProxyResponse,
    ProxySetResult,
    ReleaseRequest,
    ReleaseResponse,
    ReportNotification,
    ReportResponse,
    ResultNormal,
    ResultRecord,
    SecurityRequest,
    SecurityResponse,
    SetRequest,
    SetResponse,
    Verification,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.data import CSD, OAD, OMD, Data, DataType, integer, tsa_address
from fep.protocols.dlt698.frames import (
    Fragment,
    FragmentType,
    Frame,
    FrameDecoder,
    Function,
    ServerAddress,
    control,
    decode_fragment,
    split_apdu,
)
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.dlt698")

METER_TZ = timezone(timedelta(hours=8), "UTC+08:00")
DAR_UNDEFINED = 4
DAR_REFUSED = 3
DAR_TIMEOUT = 33
DAR_SECURITY_MISMATCH = 20
# The MAC the simulated meter's "ESAM" puts on its plaintext answers (a fixed one: the
# simulator holds no keys).
SIM_MAC = bytes.fromhex("0A0B0C0D")
FACTORY = b"FEPS" + b"0100" + b"261201" + b"0100" + b"261201" + b"\x00" * 8


@attrs.define
class SimulatedDlt698Meter:
    """One meter. ``clock`` gives the wall time (epoch seconds); energy grows from
    ``started`` at ``kwh_per_hour``. ``require_connect``: GETs before a CONNECT are refused
    with an ERROR-Response (as the dlt698 package's server does). ``rows_per_block``: record
    answers with more rows go out as GET-Response-Next blocks. ``frame_size``: APDUs longer
    than that go out as split frames."""

    address: str = "000000123456"
    clock: Callable[[], float] = time.time
    started: float | None = None
    tz: tzinfo = METER_TZ
    kwh_per_hour: float = 1.5
    start_kwh: float = 1234.56
    require_connect: bool = True
    password: str | None = None
    rows_per_block: int | None = None
    frame_size: int | None = None
    frozen_days: int = 7
    frozen_months: int = 3
    minute_period: int = 15
    outages: int = 2
    clock_offset: float = 0.0
    # Frozen times the meter lost (a power cut): its tables have no row for them.
    holes: set[float] = attrs.field(factory=set)
    # A concentrator: the meters behind it by address, answered through PROXY (a meter
    # not among them times out: DAR 33).
    children: dict[str, SimulatedDlt698Meter] = attrs.field(factory=dict)
    connected: bool = False
    # Remote control (8000) and device (4300) methods: the relay's state ("closed", "open",
    # "close allowed"), demand and event initialisations done, and the DAR every ACTION
    # gets instead (3: refused, as a meter that asks for ESAM security does).
    relay: str = "closed"
    demand_resets: int = 0
    event_clears: int = 0
    action_dar: int = 0
    # Security: ``require_security`` refuses plain GETs (DAR 20), as a meter whose security
    # mode parameter asks for plaintext + MAC does; a GET in a SECURITY-Request (plaintext,
    # RN) is answered in a SECURITY-Response in plaintext with ``mac`` (None: no MAC);
    # ciphertext is refused (DAR 22). The random numbers received are kept in ``rns``.
    require_security: bool = False
    mac: bytes | None = SIM_MAC
    rns: list[bytes] = attrs.field(factory=list)
    # A terminal's ports for PROXY transparent forwarding (TransCommand): by port OAD
    # (F2010201, the first RS-485), what answers the bytes forwarded (None: silence, DAR 33).
    ports: dict[OAD, Callable[[bytes], bytes | None]] = attrs.field(factory=dict)
    # Attributes SET may write (besides the clock), of the type they hold: the asset
    # management code (4103) by default.
    parameters: dict[OAD, Data] = attrs.field(factory=lambda: {
        OAD(0x4103, 2): Data(DataType.VISIBLE_STRING, "SIM-ASSET-0001")})
    # Event reports (REPORT-Notification) the meter pushes after its next answer, and the
    # OADs the client acknowledged (REPORT-Response).
    reports: list[ReportNotification] = attrs.field(factory=list)
    acknowledged: list[OAD] = attrs.field(factory=list)
    log: list[str] = attrs.field(factory=list)
    _blocks: list[GetResponse] = attrs.field(factory=list)
    _fragments: list[Fragment] = attrs.field(factory=list)
    _fragment_control: int = 0

    def __attrs_post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock() - 24 * 3600

    @property
    def server(self) -> ServerAddress:
        return ServerAddress(self.address)

    def now(self) -> float:
        return self.clock() + self.clock_offset

    # -- the meter's values ------------------------------------------------------------------

    def energy_raw(self, at: float, tariff: int = 0) -> int:
        """The forward active register in 0.01 kWh at ``at`` (tariff 0: total; tariffs
        1..4 share it 40/30/20/10)."""
        assert self.started is not None
        kwh = self.start_kwh + self.kwh_per_hour * max(at - self.started, 0.0) / 3600
        total = int(kwh * 100)
        if tariff == 0:
            return total
        share = (40, 30, 20, 10)[tariff - 1]
        parts = [total * s // 100 for s in (40, 30, 20, 10)]
        parts[0] += total - sum(parts)
        return parts[tariff - 1] if share else 0

    def attribute(self, oad: OAD, at: float | None = None) -> Data | None:
        """The value of an attribute (index 0) or one element; None: no such object."""
        at = self.now() if at is None else at
        whole = self._attribute(OAD(oad.oi, oad.attribute), at)
        if whole is None or oad.index == 0:
            return whole
        if whole.tag in (DataType.ARRAY, DataType.STRUCTURE) and oad.index <= len(whole.items):
            return whole.items[oad.index - 1]
        return None

    def _attribute(self, oad: OAD, at: float) -> Data | None:
        if oad in self.parameters:
            return self.parameters[oad]
        u32, u16, i32, i16 = (DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG_UNSIGNED,
                              DataType.DOUBLE_LONG, DataType.LONG)  # fmt: skip
        key = (oad.oi, oad.number)
        if key == (0x0010, 2):
            return Data.array([integer(u32, self.energy_raw(at, t)) for t in range(5)])
        if key == (0x0020, 2):
            return Data.array([integer(u32, 4 if t == 0 else [1, 1, 1, 1][t - 1])
                               for t in range(5)])  # fmt: skip
        if key == (0x2000, 2):
            return Data.array([integer(u16, v) for v in (2201, 2195, 2210)])
        if key == (0x2001, 2):
            return Data.array([integer(i32, v) for v in (5123, 4870, -250)])
        if key == (0x2004, 2):
            return Data.array([integer(i32, v) for v in (33500, 11270, 10690, 11540)])
        if key == (0x200A, 2):
            return Data.array([integer(i16, v) for v in (985, 990, 981, -512)])
        if key == (0x200F, 2):
            return integer(u16, 5002)
        if key == (0x4000, 2):
            return Data.date_time_s(datetime.fromtimestamp(at, self.tz))
        if key == (0x4001, 2):
            return Data(DataType.OCTET_STRING, bytes.fromhex(self.address))
        if key == (0x2021, 2):
            return Data.date_time_s(datetime.fromtimestamp(at, self.tz))
        if key == (0xF205, 2):
            # The relay output: descriptor, current state (0 not output: closed; 1 output:
            # tripped, open until closed), switch kind (1 latching), wiring (0 connected).
            state = 0 if self.relay == "closed" else 1
            return Data.array([Data.structure((
                Data(DataType.VISIBLE_STRING, "relay 1"), integer(DataType.ENUM, state),
                integer(DataType.ENUM, 1), integer(DataType.ENUM, 0)))])
        return None

    # -- records ---------------------------------------------------------------------------

    def frozen_times(self, oi: int) -> list[float]:
        """The times of the frozen records the meter holds (oldest first)."""
        now = datetime.fromtimestamp(self.now(), self.tz)
        if oi == 0x5004:
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            days = [(midnight - timedelta(days=n)).timestamp()
                    for n in range(self.frozen_days - 1, -1, -1)]  # fmt: skip
            return [t for t in days if t not in self.holes]
        if oi == 0x5006:
            # Frozen at 00:00 on the first of each month (the meter's zone).
            months = []
            year, month = now.year, now.month
            for _ in range(self.frozen_months):
                months.append(now.replace(year=year, month=month, day=1, hour=0, minute=0,
                                          second=0, microsecond=0).timestamp())
                year, month = (year, month - 1) if month > 1 else (year - 1, 12)
            return [t for t in reversed(months) if t not in self.holes]
        if oi == 0x5002:
            step = self.minute_period * 60
            last = int(now.timestamp()) // step * step
            times = [float(last - n * step) for n in range(24 * 3600 // step - 1, -1, -1)]
            return [t for t in times if t not in self.holes]
        return []

    def outage_rows(self) -> list[tuple[int, float, float]]:
        """(number, start, end) of the power-down events, the latest last."""
        now = self.now()
        return [(n, now - 3600 * (4 * (self.outages - n) + 2),
                 now - 3600 * (4 * (self.outages - n) + 2) + 1650)
                for n in range(1, self.outages + 1)]  # fmt: skip

    def _row(self, oi: int, at: float, number: int, columns: Sequence[OAD]) -> tuple[Data, ...]:
        out = []
        for column in columns:
            if (column.oi, column.number) == (0x2023, 2):
                out.append(integer(DataType.DOUBLE_LONG_UNSIGNED, number))
            else:
                value = self.attribute(column, at)
                out.append(value if value is not None else Data.null())
        return tuple(out)

    def read_record(self, record: GetRecord) -> ResultRecord:
        columns = tuple(c.oad for c in record.rcsd if c.oad is not None)
        rcsd = record.rcsd
        oi = record.oad.oi
        if oi == 0x3011:
            return self._events(record)
        times = self.frozen_times(oi)
        if not times:
            return ResultRecord(record.oad, rcsd, dar=DAR_UNDEFINED)
        if not columns:
            columns = (OAD(0x2023, 2), OAD(0x2021, 2), OAD(0x0010, 2))
            rcsd = tuple(CSD(oad=c) for c in columns)
        numbered = list(enumerate(times, 1))
        rsd = record.rsd
        chosen: list[tuple[int, float]]
        if rsd.selector == 9:
            n = rsd.parameters[0]
            chosen = [numbered[-n]] if 1 <= n <= len(numbered) else []
        elif rsd.selector == 10:
            n = rsd.parameters[0]
            chosen = numbered[-n:] if n else []
        elif rsd.selector in (1, 2):
            oad = rsd.parameters[0]
            if (oad.oi, oad.number) != (0x2021, 2):
                return ResultRecord(record.oad, rcsd, dar=DAR_REFUSED)
            start = rsd.parameters[1].to_datetime(self.tz)
            if start is None:
                return ResultRecord(record.oad, rcsd, dar=DAR_REFUSED)
            if rsd.selector == 1:
                chosen = [(k, t) for k, t in numbered if t == start.timestamp()]
            else:
                end = rsd.parameters[2].to_datetime(self.tz)
                if end is None:
                    return ResultRecord(record.oad, rcsd, dar=DAR_REFUSED)
                step = None
                interval = rsd.parameters[3]
                if interval.tag is DataType.TI:
                    delta = interval.value.delta()
                    step = delta.total_seconds() if delta else None
                chosen = [(k, t) for k, t in numbered
                          if start.timestamp() <= t < end.timestamp()
                          and (not step or t % step == 0)]  # fmt: skip
        elif rsd.selector == 0:
            chosen = numbered
        else:
            return ResultRecord(record.oad, rcsd, dar=DAR_REFUSED)
        rows = tuple(self._row(oi, t, k, columns) for k, t in chosen)
        return ResultRecord(record.oad, rcsd, rows=rows)

    def _events(self, record: GetRecord) -> ResultRecord:
        rcsd = record.rcsd
        rows = self.outage_rows()
        if record.rsd.selector == 9:
            n = record.rsd.parameters[0]
            rows = [rows[-n]] if 1 <= n <= len(rows) else []
        elif record.rsd.selector != 0:
            return ResultRecord(record.oad, rcsd, dar=DAR_REFUSED)
        out = []
        for number, start, end in rows:
            row = []
            for c in rcsd:
                key = (c.oad.oi, c.oad.number) if c.oad is not None else None
                if key == (0x2022, 2):
                    row.append(integer(DataType.DOUBLE_LONG_UNSIGNED, number))
                elif key == (0x201E, 2):
                    row.append(Data.date_time_s(datetime.fromtimestamp(start, self.tz)))
                elif key == (0x2020, 2):
                    row.append(Data.date_time_s(datetime.fromtimestamp(end, self.tz)))
                else:
                    row.append(Data.null())
            out.append(tuple(row))
        return ResultRecord(record.oad, rcsd, rows=tuple(out))

    # -- frames ---------------------------------------------------------------------------

    def login(self, piid: int = 0, heartbeat: int = 300) -> bytes:
        """The LINK login a terminal sends when it comes on line."""
        return self.link(LinkType.LOGIN, piid, heartbeat)

    def link(self, kind: LinkType, piid: int = 0, heartbeat: int = 300) -> bytes:
        """A LINK request (login, heartbeat, logout) of this terminal."""
        when = datetime.fromtimestamp(self.now(), self.tz)
        fields = (when.year, when.month, when.day, when.isoweekday() % 7, when.hour,
                  when.minute, when.second, when.microsecond // 1000)  # fmt: skip
        apdu = LinkRequest(piid, kind, heartbeat, fields)
        frame = Frame(control(Function.LINK, from_server=True, client_started=False),
                      self.server, 0, encode_apdu(apdu))
        return frame.encode()

    def answer(self, frame: Frame) -> list[Frame]:
        """The frames this meter sends for ``frame`` (none when it is not addressed)."""
        if frame.from_server or not frame.server.matches(self.server):
            return []
        if frame.split:
            return self._on_fragment(frame)
        try:
            apdu = decode_apdu(frame.data)
        except FrameError as e:
            self.log.append(f"bad APDU: {e.message}")
            return self._reply(frame, ErrorResponse(frame.data[1] if len(frame.data) > 1 else 0,
                                                    1))  # fmt: skip
        response = self.respond(apdu)
        if response is None:
            return []
        out = self._reply(frame, response)
        while self.reports and not self._fragments:
            report = self.reports.pop(0)
            out.append(Frame(control(Function.USER_DATA, from_server=True,
                                     client_started=False),
                             self.server, frame.client, encode_apdu(report)))  # fmt: skip
        return out

    def report_outage(self, piid: int = 1) -> ReportNotification:
        """Queue a report of the latest power-down event (sent after the next answer)."""
        number, start, end = self.outage_rows()[-1]
        columns = (OAD(0x2022, 2), OAD(0x201E, 2), OAD(0x2020, 2))
        rcsd = tuple(CSD(oad=c) for c in columns)
        row = (integer(DataType.DOUBLE_LONG_UNSIGNED, number),
               Data.date_time_s(datetime.fromtimestamp(start, self.tz)),
               Data.date_time_s(datetime.fromtimestamp(end, self.tz)))  # fmt: skip
        report = ReportNotification(piid, records=(ResultRecord(OAD(0x3011, 2), rcsd,
                                                                (row,)),))  # fmt: skip
        self.reports.append(report)
        return report

    def _reply(self, request: Frame, apdu: Apdu) -> list[Frame]:
        data = encode_apdu(apdu)
        ctrl = control(Function.USER_DATA, from_server=True, client_started=True)
        if self.frame_size is not None and len(data) > self.frame_size:
            self._fragments = split_apdu(data, self.frame_size)
            self._fragment_control = ctrl | 0x20
            first = self._fragments.pop(0)
            return [Frame(self._fragment_control, self.server, request.client, first.encode())]
        return [Frame(ctrl, self.server, request.client, data)]

    def _on_fragment(self, frame: Frame) -> list[Frame]:
        try:
            fragment = decode_fragment(frame.data)
        except FrameError:
            return []
        if fragment.type is not FragmentType.ACK or not self._fragments:
            self.log.append("split request refused")
            return []
        following = self._fragments.pop(0)
        return [Frame(self._fragment_control, self.server, frame.client, following.encode())]

    def respond(self, apdu: Apdu) -> Apdu | None:
        if isinstance(apdu, ConnectRequest):
            self.log.append("connect")
            ok = self.password is None or apdu.secret == self.password.encode("latin-1")
            self.connected = ok
            # What both can do: the conformance bits both have, the smaller sizes.
            protocol = bytes(a & b for a, b in zip(apdu.protocol_conformance,
                                                   b"\xff\xff\xf8" + b"\x00" * 5, strict=True))
            function = bytes(a & b for a, b in zip(apdu.function_conformance, b"\xff" * 16,
                                                   strict=True))  # fmt: skip
            return ConnectResponse(apdu.piid, FACTORY, 0x0010, protocol, function,
                                   min(apdu.send_max, 1024), min(apdu.receive_max, 1024),
                                   min(apdu.window, 1), min(apdu.apdu_max, 2048), apdu.timeout,
                                   0 if ok else 1)  # fmt: skip
        if isinstance(apdu, ReleaseRequest):
            self.log.append("release")
            self.connected = False
            return ReleaseResponse(apdu.piid, 0)
        if isinstance(apdu, LinkResponse | ReportResponse):
            self.log.append(type(apdu).__name__)
            if isinstance(apdu, ReportResponse):
                self.acknowledged += apdu.oads
            return None
        if self.require_connect and not self.connected:
            piid = getattr(apdu, "piid", 0)
            self.log.append("refused: no association")
            return ErrorResponse(piid, 2)
        if isinstance(apdu, SecurityRequest):
            return self._secured(apdu)
        if isinstance(apdu, GetRequest):
            if self.require_security:
                self.log.append("refused: plain GET")
                return self._refused_get(apdu, DAR_SECURITY_MISMATCH)
            return self._get(apdu)
        if isinstance(apdu, ProxyRequest):
            return self._proxy(apdu)
        if isinstance(apdu, ActionRequest):
            return ActionResponse(apdu.piid, tuple(ActionResult(omd, self._act(omd, value))
                                                   for omd, value in apdu.methods),
                                  apdu.list)  # fmt: skip
        if isinstance(apdu, SetRequest):
            self.log.append("set " + ",".join(str(o) for o, _ in apdu.values))
            return SetResponse(apdu.piid, tuple((oad, self.set(oad, value))
                                                for oad, value in apdu.values), apdu.list)
        piid = getattr(apdu, "piid", 0)
        return ErrorResponse(piid, 2)

    def set(self, oad: OAD, value: Data) -> int:
        """One attribute set: its DAR (the clock, 40000200, is the one settable)."""
        if (oad.oi, oad.number) == (0x4000, 2) and value.tag is DataType.DATE_TIME_S:
            when = value.to_datetime(self.tz)
            if when is not None:
                self.clock_offset = when.timestamp() - self.clock()
                return 0
        held = self.parameters.get(oad)
        if held is not None:
            if held.tag is not value.tag:
                return 7  # type mismatch
            self.parameters[oad] = value
            return 0
        return DAR_REFUSED

    def _read_after(self, oad: OAD) -> ResultNormal:
        value = self.attribute(oad)
        return ResultNormal(oad, data=value) if value is not None else \
            ResultNormal(oad, dar=DAR_UNDEFINED)

    def _secured(self, request: SecurityRequest) -> SecurityResponse:
        """A SECURITY-Request: a plaintext GET with an RN is answered in plaintext + MAC."""
        if request.ciphered or request.verification not in (Verification.RN,
                                                            Verification.RN_MAC):
            self.log.append("refused: secured request not plaintext + RN")
            return SecurityResponse(dar=22)
        try:
            inner = decode_apdu(request.data)
        except FrameError:
            return SecurityResponse(dar=255)
        if not isinstance(inner, GetRequest):
            self.log.append(f"refused: secured {type(inner).__name__}")
            return SecurityResponse(dar=3)
        self.rns.append(request.rn)
        self.log.append("secured")
        answer = self._get(inner) if self.connected or not self.require_connect \
            else ErrorResponse(inner.piid, 2)
        return SecurityResponse(encode_apdu(answer), mac=self.mac)

    def _refused_get(self, request: GetRequest, dar: int) -> GetResponse:
        if request.kind in (GetKind.NORMAL, GetKind.NORMAL_LIST):
            return GetResponse(request.kind, request.piid, tuple(
                ResultNormal(o, dar=dar) for o in request.oads))  # fmt: skip
        if request.kind in (GetKind.RECORD, GetKind.RECORD_LIST):
            return GetResponse(request.kind, request.piid, records=tuple(
                ResultRecord(r.oad, r.rcsd, dar=dar) for r in request.records))  # fmt: skip
        return GetResponse(GetKind.NEXT, request.piid, last=True, block=request.block + 1,
                           dar=dar)  # fmt: skip

    def _act(self, omd: OMD, value: Data) -> int:
        """One ACTION method: its DAR."""
        self.log.append(f"action {omd}")
        if self.action_dar:
            return self.action_dar
        relays = value.items if value.tag is DataType.ARRAY else ()
        if (omd.oi, omd.method) == (0x8000, 129) and relays:
            self.relay = "open"
        elif (omd.oi, omd.method) == (0x8000, 130) and relays:
            command = relays[0].items[1].value if len(relays[0].items) > 1 else 0
            self.relay = "closed" if command == 1 else "close allowed"
        elif (omd.oi, omd.method) == (0x4300, 6):
            self.demand_resets += 1
        elif (omd.oi, omd.method) == (0x4300, 5):
            self.event_clears += 1
            self.outages = 0
        else:
            return DAR_UNDEFINED
        return 0

    def _proxy(self, request: ProxyRequest) -> ProxyResponse:
        if request.kind in (5, 6):
            answers = []
            for action in request.actions:
                child = self.children.get(tsa_address(action.tsa))
                self.log.append(f"proxy action {tsa_address(action.tsa)} "
                                + ",".join(str(omd) for omd, _ in action.methods))
                done = []
                for n, (omd, parameter) in enumerate(action.methods):
                    dar = child._act(omd, parameter) if child is not None else DAR_TIMEOUT
                    read = None
                    if request.kind == 6:
                        oad = action.then[n][0]
                        read = child._read_after(oad) if child is not None else \
                            ResultNormal(oad, dar=DAR_TIMEOUT)
                    done.append(ActionResult(omd, dar, None, read))
                answers.append((action.tsa, tuple(done)))
            return ProxyResponse(request.kind, request.piid, actions=tuple(answers))
        if request.kind in (3, 4):
            sets: list[tuple[bytes, tuple[ProxySetResult, ...]]] = []
            for ps in request.sets:
                child = self.children.get(tsa_address(ps.tsa))
                self.log.append(f"proxy set {tsa_address(ps.tsa)} "
                                + ",".join(str(oad) for oad, _ in ps.values))
                set_results: list[ProxySetResult] = []
                for n, (oad, new) in enumerate(ps.values):
                    dar = child.set(oad, new) if child is not None else DAR_TIMEOUT
                    read = None
                    if request.kind == 4:
                        after = ps.then[n][0]
                        read = child._read_after(after) if child is not None else \
                            ResultNormal(after, dar=DAR_TIMEOUT)
                    set_results.append(ProxySetResult(oad, dar, read))
                sets.append((ps.tsa, tuple(set_results)))
            return ProxyResponse(request.kind, request.piid, sets=tuple(sets))
        if request.kind == 7:
            forward = request.transparent
            assert forward is not None
            self.log.append(f"proxy forward {forward.port} {forward.command.hex()}")
            port = self.ports.get(forward.port)
            answer = port(forward.command) if port is not None else None
            if answer is None:
                return ProxyResponse(7, request.piid, port=forward.port, dar=DAR_TIMEOUT)
            return ProxyResponse(7, request.piid, port=forward.port, command=answer)
        if request.kind == 1:
            meters = []
            for target in request.targets:
                child = self.children.get(tsa_address(target.tsa))
                self.log.append(f"proxy {tsa_address(target.tsa)} "
                                + ",".join(str(o) for o in target.oads))
                results = []
                for oad in target.oads:
                    value = child.attribute(oad) if child is not None else None
                    if child is None:
                        results.append(ResultNormal(oad, dar=DAR_TIMEOUT))
                    elif value is None:
                        results.append(ResultNormal(oad, dar=DAR_UNDEFINED))
                    else:
                        results.append(ResultNormal(oad, data=value))
                meters.append((target.tsa, tuple(results)))
            return ProxyResponse(1, request.piid, tuple(meters))
        assert request.record is not None
        child = self.children.get(tsa_address(request.tsa))
        self.log.append(f"proxy record {tsa_address(request.tsa)} {request.record.oad}")
        record = (child.read_record(request.record) if child is not None else
                  ResultRecord(request.record.oad, request.record.rcsd, dar=DAR_TIMEOUT))
        return ProxyResponse(2, request.piid, tsa=request.tsa, record=record)

    def _get(self, request: GetRequest) -> GetResponse:
        piid = request.piid
        if request.kind in (GetKind.NORMAL, GetKind.NORMAL_LIST):
            self.log.append("get " + ",".join(str(o) for o in request.oads))
            results = []
            for oad in request.oads:
                value = self.attribute(oad)
                results.append(ResultNormal(oad, data=value) if value is not None
                               else ResultNormal(oad, dar=DAR_UNDEFINED))  # fmt: skip
            return GetResponse(request.kind, piid, tuple(results))
        if request.kind in (GetKind.RECORD, GetKind.RECORD_LIST):
            self.log.append("record " + ",".join(str(r.oad) for r in request.records))
            records = tuple(self.read_record(r) for r in request.records)
            per_block = self.rows_per_block
            if per_block and any(r.rows and len(r.rows) > per_block for r in records):
                return self._in_blocks(piid, records, per_block)
            return GetResponse(request.kind, piid, records=records)
        # GET-Request-Next
        self.log.append(f"next {request.block}")
        if not self._blocks or self._blocks[0].block != request.block + 1:
            self._blocks = []
            return GetResponse(GetKind.NEXT, piid, last=True, block=request.block + 1, dar=14)
        block = attrs.evolve(self._blocks.pop(0), piid_acd=piid)
        return block

    def _in_blocks(self, piid: int, records: Sequence[ResultRecord],
                   per_block: int) -> GetResponse:  # fmt: skip
        pieces: list[ResultRecord] = []
        for record in records:
            rows = record.rows or ()
            if record.rows is None:
                pieces.append(record)
                continue
            for n in range(0, max(len(rows), 1), per_block):
                pieces.append(attrs.evolve(record, rows=rows[n : n + per_block]))
        blocks = [GetResponse(GetKind.NEXT, piid, records=(p,), last=i == len(pieces),
                              block=i)
                  for i, p in enumerate(pieces, 1)]  # fmt: skip
        self._blocks = blocks[1:]
        return blocks[0]


# ---------------------------------------------------------------------------
# Twisted server
# ---------------------------------------------------------------------------


class Dlt698MeterProtocol(Protocol):
    """Serves the factory's meters on one connection; a terminal-mode factory logs in
    first."""

    factory: Dlt698MeterFactory

    def __init__(self) -> None:
        self._decoder = FrameDecoder()

    def connectionMade(self) -> None:
        f = self.factory
        f.connections += 1
        if f.login and self.transport is not None:
            for meter in f.meters:
                self.transport.write(meter.login())

    def dataReceived(self, data: bytes) -> None:
        f = self.factory
        for frame in self._decoder.decode_all(data):
            if isinstance(frame, FrameError):
                f.bad_requests += 1
                log.debug("simulator ignored: {why}", why=frame.message)
                continue
            f.requests += 1
            for meter in f.meters:
                for answer in meter.answer(frame):
                    if self.transport is not None:
                        self.transport.write(answer.encode(preamble=f.preamble))
                        f.answers += 1

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        for meter in self.factory.meters:
            meter.connected = False

    def send_report(self, report: ReportNotification, meter: SimulatedDlt698Meter | None = None,
                    address: str | None = None) -> None:  # fmt: skip
        """A terminal's REPORT-Notification sent now (not after an answer), in a frame from
        ``address`` (default: the meter's own: a terminal reporting a meter behind it
        names that meter)."""
        sender = meter or self.factory.meters[0]
        server = ServerAddress(address) if address is not None else sender.server
        frame = Frame(control(Function.USER_DATA, from_server=True, client_started=False),
                      server, 0, encode_apdu(report))
        if self.transport is not None:
            self.transport.write(frame.encode(preamble=self.factory.preamble))

    def heartbeat(self, meter: SimulatedDlt698Meter | None = None) -> None:
        """A LINK heartbeat sent now."""
        sender = meter or self.factory.meters[0]
        if self.transport is not None:
            self.transport.write(sender.link(LinkType.HEARTBEAT))


class Dlt698MeterFactory(ServerFactory[Dlt698MeterProtocol]):
    protocol = Dlt698MeterProtocol
    noisy = False

    def __init__(
        self,
        meters: Sequence[SimulatedDlt698Meter] | None = None,
        reactor: IReactorTime | None = None,
        *,
        login: bool = False,
        preamble: int = 0,
    ) -> None:
        self.meters = list(meters) if meters is not None else [SimulatedDlt698Meter()]
        self.reactor = reactor
        self.login = login
        self.preamble = preamble
        self.connections = 0
        self.requests = 0
        self.answers = 0
        self.bad_requests = 0


RS485_1 = OAD(0xF201, 2, 1)


def dlt645_on_port(address: str) -> Callable[[bytes], bytes | None]:
    """A simulated DL/T 645 meter as a terminal's port answers for it: the frame forwarded
    in, its answer's bytes out (None: not addressed or not understood, the port is
    silent)."""
    from fep.protocols.dlt645 import frames as f645
    from fep.sim.dlt645 import SimulatedDlt645Meter

    meter = SimulatedDlt645Meter(address=address)

    def port(data: bytes) -> bytes | None:
        try:
            answer = meter.answer(f645.decode_frame(data))
        except FrameError:
            return None
        return answer.encode() if answer is not None else None

    return port


def serve_pty(reactor: IConnectingReactor, device: str, factory: Dlt698MeterFactory,
              baud: int = 9600) -> Any:  # fmt: skip
    """Serve the factory's meters on a serial device or pty (8E1, as RS-485 lines run)."""
    return serve.serve_pty(reactor, device, factory, baudrate=baud, frame="8E1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fep.sim.dlt698",
                                     description="A simulated DL/T 698.45 meter")
    parser.add_argument("--port", type=int, metavar="PORT", help="listen on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--pty", metavar="DEVICE", help="serve on this serial device or pty")
    parser.add_argument("--baud", type=int, default=9600, help="serial speed (8E1)")
    parser.add_argument("--address", default="000000123456", help="the meter's address")
    parser.add_argument("--login", action="store_true", help="log in (LINK) when connected")
    parser.add_argument("--no-connect", action="store_true",
                        help="answer GETs without a CONNECT first")
    parser.add_argument("--password", help="the general password CONNECT must carry")
    parser.add_argument("--rows-per-block", type=int, help="record rows per GET-Next block")
    parser.add_argument("--frame-size", type=int, help="APDU bytes per split frame")
    parser.add_argument("--secured", action="store_true",
                        help="refuse plain GETs; answer GETs in SECURITY-Requests (plaintext"
                        " + RN) in plaintext with a fixed MAC")
    parser.add_argument("--rs485", metavar="ADDRESS",
                        help="a simulated DL/T 645 meter on the terminal's RS-485 port "
                        "(F2010201), reached by PROXY transparent forwarding")
    parser.add_argument("--behind", action="append", default=[], metavar="ADDRESS",
                        help="a meter behind this one (a concentrator), read through PROXY")
    args = parser.parse_args(argv)
    if args.port is None and not args.pty:
        parser.error("give --port or --pty")
    try:
        ServerAddress(args.address)
    except ValueError as e:
        parser.error(f"--address: {e}")
    reactor = serve.command_reactor()
    meter = SimulatedDlt698Meter(args.address, require_connect=not args.no_connect,
                                 password=args.password, rows_per_block=args.rows_per_block,
                                 frame_size=args.frame_size,
                                 require_security=args.secured)  # fmt: skip
    for n, address in enumerate(args.behind, 1):
        try:
            ServerAddress(address)
        except ValueError as e:
            parser.error(f"--behind: {e}")
        meter.children[address] = SimulatedDlt698Meter(address, start_kwh=100.0 * n)
    if args.rs485:
        meter.ports[RS485_1] = dlt645_on_port(args.rs485)
    factory = Dlt698MeterFactory([meter], reactor, login=args.login)
    if args.port is not None:
        serve.serve_tcp(reactor, args.port, factory, args.interface, args.address)
    if args.pty:
        serve_pty(reactor, args.pty, factory, args.baud)
        print(f"serving {args.address} on {args.pty}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "RS485_1",
    "Dlt698MeterFactory",
    "dlt645_on_port",
    "Dlt698MeterProtocol",
    "SimulatedDlt698Meter",
    "serve_pty",
]
