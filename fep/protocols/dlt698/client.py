"""The DL/T 698.45 read session as a sans-IO state machine: CONNECT (none or general
password), GET-Request NormalList of the attributes in groups, GET-Request Record for frozen
and event records, GET-Request Next while the meter answers in blocks, split frames
reassembled (and acknowledged), a terminal's LINK login/heartbeat answered with fep's time,
REPORT-Notifications acknowledged and kept, RELEASE at the end.

``start()``, ``receive(bytes)`` and ``timeout()`` give actions: ``Send(bytes)`` (then the
answer timer runs), ``Resent``, ``Noise`` (damaged bytes skipped), ``Skipped`` (an item not
read, and why), ``Linked`` (the server's LINK request answered), and at the end
``Finished(records)`` or ``Failed(error)``. Bad bytes never raise out of here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError, SessionTimeout
from fep.model import Record, utcnow
from fep.protocols.dlt698.apdu import (
    ActionRequest,
    ActionResponse,
    Apdu,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    GetKind,
    GetRecord,
    GetRequest,
    GetResponse,
    LinkRequest,
    LinkType,
    ProxyAction,
    ProxyRequest,
    ProxyResponse,
    ProxySet,
    ProxyTarget,
    ProxyTransparent,
    ReleaseRequest,
    ReleaseResponse,
    ReportNotification,
    ResultNormal,
    ResultRecord,
    SecurityRequest,
    SecurityResponse,
    SetRequest,
    SetResponse,
    dar_text,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.data import (
    CSD,
    OAD,
    OMD,
    RSD,
    TI,
    Data,
    DataType,
    selector2,
    selector9,
    tsa_address,
    tsa_from_address,
)
from fep.protocols.dlt698.frames import (
    FragmentType,
    Frame,
    Function,
    Reassembler,
    ServerAddress,
    control,
    decode_fragment,
    fragment_ack,
    server_address,
)
from fep.protocols.dlt698.objects import (
    CLOCK,
    EVENT_END,
    EVENT_NUMBER,
    EVENT_START,
    FROZEN,
    FROZEN_TIME,
    PROTOCOL,
    NoMapping,
    readings,
    record_records,
)
from fep.protocols.dlt698.security import (
    PLAIN,
    REFUSE_UNVERIFIED,
    SECURITY_MODES,
    IDlt698Esam,
    NoEsam,
)
from fep.protocols.dlt698.terminal import (
    LinkDecoder,
    ReportReceived,
    date_time_of,
    link_answer,
    link_response,
    report_received,
)

# Chinese meters keep local time: UTC+8.
DEFAULT_METER_TZ: Final = timezone(timedelta(hours=8), "UTC+08:00")
WAKEUP_PREAMBLE: Final = 4

DEFAULT_ITEMS: Final = tuple(OAD.parse(t) for t in (
    "00100200",  # forward active energy, total and tariffs
    "00200200",  # reverse active energy
    "20000200",  # voltages
    "20010200",  # currents
    "20040200",  # active power
    "200A0200",  # power factor
    "200F0200",  # grid frequency
    "40000200",  # date and time
))  # fmt: skip
FROZEN_COLUMNS: Final = (FROZEN_TIME, OAD(0x0010, 2), OAD(0x0020, 2))
EVENT_COLUMNS: Final = (EVENT_NUMBER, EVENT_START, EVENT_END)


@attrs.frozen
class RecordRead:
    """One record read: a frozen (50xx) or event (30xx) object, its columns, and the rows:
    those frozen in [since, until) (RSD selector 2 on the frozen time, every ``every``), or
    the last ``last`` (selector 9, one request each: 1 the latest). ``interval``: the rows
    of a range are a profile of this interval, filed as IntervalBlocks (the minute and hour
    frozen objects have one by default)."""

    oad: OAD
    columns: tuple[OAD, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    every: TI | None = None
    last: int = 1
    interval: timedelta | None = None

    def requests(self, tz: tzinfo) -> list[GetRecord]:
        columns = self.columns or (EVENT_COLUMNS if 0x3000 <= self.oad.oi < 0x3200
                                   else FROZEN_COLUMNS)  # fmt: skip
        rcsd = tuple(CSD(oad=c) for c in columns)
        if self.since is not None and self.until is not None:
            start = Data.date_time_s(self.since.astimezone(tz))
            end = Data.date_time_s(self.until.astimezone(tz))
            every = Data(DataType.TI, self.every) if self.every is not None else None
            rsd: RSD = selector2(FROZEN_TIME, start, end, every)
            return [GetRecord(self.oad, rsd, rcsd)]
        return [GetRecord(self.oad, selector9(n), rcsd) for n in range(1, self.last + 1)]

    @property
    def period(self) -> timedelta | None:
        """The interval of the records' rows, when they form a profile (minute and hour
        frozen objects read by time range)."""
        if self.since is None:
            return None
        if self.interval is not None:
            return self.interval
        if self.oad.oi not in (0x5002, 0x5003):
            return None
        if self.every is not None:
            return self.every.delta()
        return FROZEN[self.oad.oi][1]


@attrs.frozen
class ProxyRead:
    """A meter behind a concentrator (the session's server), read through it with
    PROXY-Request: its ``address`` (as its TSA holds it, most significant digit first), the
    attributes (one GetRequestList for every proxied meter), the records (one
    GetRequestRecord each), fep's ``meter`` id for its records (default: the address) and
    how long the concentrator may wait for it (seconds)."""

    address: str
    items: tuple[OAD, ...] = DEFAULT_ITEMS
    records: tuple[RecordRead, ...] = ()
    meter: str | None = None
    timeout: int = 30
    # Methods run on the meter (a command) with PROXY ActionRequestList, before its reads;
    # a DAR other than 0 fails the session.
    actions: tuple[tuple[OMD, Data], ...] = ()
    # Attributes set on the meter with PROXY SetRequestList, before its actions and reads
    # (``set_clock``: its clock, 40000200, to fep's time when the request goes out); a DAR
    # other than 0 fails the session.
    sets: tuple[tuple[OAD, Data], ...] = ()
    set_clock: bool = False
    # Per set (SetThenGetRequestList) or per method (ActionThenGetRequestList): the
    # attribute the terminal reads after it and the delay in seconds before; kept in the
    # client's ``read_back``.
    read_after: tuple[tuple[OAD, int], ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.read_after and self.actions and (self.sets or self.set_clock):
            raise ValueError("reads after both sets and actions of one meter")
        done = len(self.actions) if self.actions else len(self.sets) + int(self.set_clock)
        if self.read_after and len(self.read_after) != done:
            raise ValueError("one read after each set or method")
        if not self.address.isdigit():
            raise ValueError(f"a meter address is decimal digits, not {self.address!r}")
        tsa_from_address(self.address)  # ValueError for what is no address

    @property
    def tsa(self) -> bytes:
        return tsa_from_address(self.address)


@attrs.frozen
class ClientSettings:
    address: ServerAddress = attrs.field(
        default=ServerAddress.wildcard(), converter=server_address
    )
    client: int = 0
    items: tuple[OAD, ...] = DEFAULT_ITEMS
    records: tuple[RecordRead, ...] = ()
    connect: bool = True
    password: str | None = None
    release: bool = True
    list_size: int = 8
    wakeup: bool = True
    retries: int = 1
    tz: tzinfo = DEFAULT_METER_TZ
    meter: str | None = None
    route: str | None = None
    max_blocks: int = 255
    max_apdu: int = 65536
    # The longest frame taken from the meter (meters send 512 to 2048 bytes; the length
    # field allows 16 385): longer ones are line noise.
    max_frame: int = 8192
    # Set the meter's clock (40000200) to fep's time after the association, before reads.
    set_clock: bool = False
    # Meters behind the server (a concentrator) read through it (PROXY).
    proxies: tuple[ProxyRead, ...] = ()
    # Methods run with ACTION-Request-Normal after the association, before reads, each
    # once (a command: fep.protocols.dlt698.control); a DAR other than 0 fails the session.
    actions: tuple[tuple[OMD, Data], ...] = ()
    # GETs in SECURITY-Requests (plaintext + RN) and the answers' MACs handed to ``esam``
    # (fep.protocols.dlt698.security): plain, plaintext-rn or refuse-unverified.
    security: str = PLAIN
    esam: IDlt698Esam = attrs.field(factory=NoEsam)
    # Attributes written with SET-Request after the association (a command; a DAR other
    # than 0 fails the session).
    sets: tuple[tuple[OAD, Data], ...] = ()
    # Attributes read after the sets and actions (a relay's state after a trip or close,
    # the attributes set), kept in the client's ``read_back``, not filed as records.
    read_back: tuple[OAD, ...] = ()
    # Frames forwarded as they are through the terminal's ports (PROXY TransCommand), after
    # everything else; the answers kept in the client's ``forwarded``.
    transparent: tuple[ProxyTransparent, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security {self.security!r} is not one of "
                             f"{', '.join(SECURITY_MODES)}")
        if not 1 <= self.list_size <= 64:
            raise ValueError(f"list size {self.list_size} is not 1..64")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries {self.retries} is not 0..10")


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@attrs.frozen
class Send:
    data: bytes


@attrs.frozen
class Resent:
    attempt: int
    why: str


@attrs.frozen
class Noise:
    why: str


@attrs.frozen
class Skipped:
    item: str
    why: str


@attrs.frozen
class Linked:
    """The server's LINK request (login, heartbeat, logout) was answered."""

    kind: str
    address: str


class ActionRefused(ProtocolError):
    """The meter refused an ACTION (its DAR): the same request gets the same answer."""

    final = True


@attrs.frozen
class Finished:
    records: tuple[Record, ...]


@attrs.frozen
class Failed:
    error: ProtocolError


Action = Send | Resent | Noise | Skipped | Linked | ReportReceived | Finished | Failed


class State(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting for an answer"
    DONE = "done"


def _merged(records: Iterable[ResultRecord]) -> tuple[ResultRecord, ...]:
    """The pieces of a record answer sent in blocks, one record again per object."""
    out: list[ResultRecord] = []
    for record in records:
        last = out[-1] if out else None
        if (last is not None and last.oad == record.oad and last.rcsd == record.rcsd
                and last.rows is not None and record.rows is not None):  # fmt: skip
            out[-1] = attrs.evolve(last, rows=last.rows + record.rows)
        else:
            out.append(record)
    return tuple(out)


_Decoder = LinkDecoder


class Dlt698Client:
    """One read session with one meter (or terminal, as a meter): every item of the
    settings. ``now`` is fep's clock (UTC): received times and LINK answers."""

    def __init__(self, settings: ClientSettings, *, now: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.now = now
        self.state = State.IDLE
        self.decoder = _Decoder(settings.max_frame)
        self.reassembler = Reassembler(settings.max_apdu)
        self.noise = 0
        self.stale = 0
        self.echoes = 0
        self.resent = 0
        self.links = 0
        self.reports = 0
        self.skipped: list[tuple[str, str]] = []
        self.records: list[Record] = []
        self.connect_response: ConnectResponse | None = None
        self.clock_set = False
        # The ACTION methods the meter ran (OMDs in hex).
        self.actions_done: list[str] = []
        # Secured answers whose MAC the ESAM service verified, and those nobody could.
        self.macs_verified = 0
        # Attributes read back after commands: (meter, result); answers of transparent
        # forwarding: (port, answer bytes or None, DAR or None); attributes set (OADs).
        self.read_back: list[tuple[str, ResultNormal]] = []
        self.forwarded: list[tuple[str, bytes | None, int | None]] = []
        self.sets_done: list[str] = []
        self.unverified = 0
        self._rn = b""
        # Whole frames decoded after the session's end (see ``unconsumed``).
        self._plan: list[tuple[str, Apdu, object]] = []
        self._piid = 0
        self._request: bytes = b""
        self._request_piid = -1
        self._what = ""
        self._attempt = 0
        self._damaged = False
        self._blocks: list[GetResponse] = []
        self._item: object = None
        self._build_plan()

    # -- plan -----------------------------------------------------------------------------

    def _next_piid(self) -> int:
        self._piid = (self._piid % 63) + 1
        return self._piid

    def _build_plan(self) -> None:
        s = self.settings
        if s.set_clock:
            self._plan.append(("clock set", SetRequest(0, ()), "clock"))
        if s.sets:
            self._plan.append((f"SET of {', '.join(str(o) for o, _ in s.sets)}",
                               SetRequest(0, s.sets, len(s.sets) > 1), ("set", s.sets)))
        for omd, parameter in s.actions:
            self._plan.append((f"ACTION {omd}", ActionRequest(0, ((omd, parameter),)),
                               ("action", omd)))
        if s.read_back and (s.actions or s.sets):
            kind = GetKind.NORMAL if len(s.read_back) == 1 else GetKind.NORMAL_LIST
            self._plan.append((f"GET of {', '.join(map(str, s.read_back))} (read back)",
                               GetRequest(kind, 0, s.read_back), "read-back"))  # fmt: skip
        items = list(s.items)
        for n in range(0, len(items), s.list_size):
            group = tuple(items[n : n + s.list_size])
            kind = GetKind.NORMAL if len(group) == 1 else GetKind.NORMAL_LIST
            self._plan.append((f"GET of {', '.join(map(str, group))}",
                               GetRequest(kind, 0, group), group))  # fmt: skip
        for read in s.records:
            for record in read.requests(s.tz):
                self._plan.append((f"record read of {record.oad}",
                                   GetRequest(GetKind.RECORD, 0, records=(record,)), read))
        for proxy in s.proxies:
            if proxy.sets or proxy.set_clock:
                values: tuple[tuple[OAD, Data], ...] = (
                    ((CLOCK, Data.null()),) if proxy.set_clock else ()) + proxy.sets
                then = () if proxy.actions else proxy.read_after
                what = ", ".join(str(oad) for oad, _ in values)
                request = ProxyRequest(4 if then else 3, 0, proxy.timeout, sets=(
                    ProxySet(proxy.tsa, proxy.timeout, values, then),))
                self._plan.append((f"PROXY SET {what} of {proxy.address}", request,
                                   ("proxy-set", proxy)))
            if proxy.actions:
                what = ", ".join(str(omd) for omd, _ in proxy.actions)
                then = proxy.read_after
                request = ProxyRequest(6 if then else 5, 0, proxy.timeout, actions=(
                    ProxyAction(proxy.tsa, proxy.timeout, proxy.actions, then),))
                self._plan.append((f"PROXY ACTION {what} of {proxy.address}", request,
                                   ("proxy-action", proxy)))
        targets = tuple(ProxyTarget(p.tsa, p.timeout, p.items) for p in s.proxies if p.items)
        if targets:
            longest = max(t.timeout for t in targets) * len(targets)
            self._plan.append((f"PROXY read of {len(targets)} meters",
                               ProxyRequest(1, 0, min(longest, 0xFFFF), targets), "proxy"))
        for proxy in s.proxies:
            for read in proxy.records:
                for record in read.requests(s.tz):
                    self._plan.append((f"PROXY record read of {record.oad} from {proxy.address}",
                                       ProxyRequest(2, 0, proxy.timeout, tsa=proxy.tsa,
                                                    record=record), read))  # fmt: skip
        for forward in s.transparent:
            self._plan.append((f"PROXY forwarding on port {forward.port}",
                               ProxyRequest(7, 0, 0, transparent=forward),
                               ("transparent", forward)))

    # -- properties -------------------------------------------------------------------------

    def unconsumed(self) -> bytes:
        """What the session received but did not use once it is over (frames after its last
        answer, the start of one), handed out once: a channel that carries pushes gives
        them to its push decoder."""
        return self.decoder.drain()

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def waiting(self) -> bool:
        return self.state is State.WAITING

    @property
    def waiting_for(self) -> str | None:
        return self._what if self.state is State.WAITING else None

    @property
    def line_garbage(self) -> int:
        return self.decoder.skipped - self.decoder.wakeup_bytes

    def _meter_id(self) -> str:
        return self.settings.meter or self.settings.address.address

    def _who(self) -> str:
        return f"meter {self.settings.meter or self.settings.address.address}"

    def _error(self, message: str, cls: type[ProtocolError] = ProtocolError) -> ProtocolError:
        s = self.settings
        return cls(message, meter=s.meter, route=s.route, protocol=PROTOCOL)

    # -- driving ----------------------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.state is not State.IDLE:
            raise ProtocolError(f"DL/T 698.45 session already {self.state.value}",
                                protocol=PROTOCOL)  # fmt: skip
        self.state = State.WAITING
        s = self.settings
        if s.connect:
            return self._send(self._connect_request(), "CONNECT", None)
        return self._next_item()

    def _connect_request(self) -> ConnectRequest:
        s = self.settings
        secret = s.password.encode("latin-1") if s.password is not None else b""
        return ConnectRequest(0, mechanism=1 if s.password else 0, secret=secret)

    def receive(self, data: bytes) -> list[Action]:
        if not self.waiting():
            return []
        actions: list[Action] = []
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                self.noise += 1
                self._damaged = True
                actions.append(Noise(item.message))
            else:
                actions += self._on_frame(item)
            if not self.waiting():
                # What follows the session's last answer is not its own (a terminal's
                # heartbeat or report): it stays undecoded for whoever takes the line next.
                break
        if (self.waiting() and self._damaged and self.decoder.buffered == 0
                and self._attempt < self.settings.retries):  # fmt: skip
            actions += self._resend("damaged answer")
        return actions

    def timeout(self) -> list[Action]:
        if self.state is not State.WAITING:
            return []
        if self._attempt < self.settings.retries:
            return self._resend("no answer")
        why = f"only damaged answers to {self._what}" if self._damaged else \
            f"no valid answer to {self._what}"
        return self._fail(self._error(f"{self._who()}: {why}", SessionTimeout))

    # -- requests ---------------------------------------------------------------------------

    def _frame(self, apdu_bytes: bytes, *, started: bool = True, function: Function =
               Function.USER_DATA) -> bytes:  # fmt: skip
        s = self.settings
        frame = Frame(control(function, client_started=started), s.address, s.client,
                      apdu_bytes)
        return frame.encode(preamble=WAKEUP_PREAMBLE if s.wakeup else 0)

    def _send(self, apdu: Apdu, what: str, item: object) -> list[Action]:
        if isinstance(apdu, SetRequest) and item == "clock":
            # The time is taken when the request goes out, not when it was planned.
            local = self.now().astimezone(self.settings.tz)
            apdu = SetRequest(0, ((CLOCK, Data.date_time_s(local)),))
        if isinstance(apdu, ProxyRequest) and apdu.kind in (3, 4) and isinstance(item, tuple) \
                and item[1].set_clock:
            local = self.now().astimezone(self.settings.tz)
            ps = apdu.sets[0]
            values = ((CLOCK, Data.date_time_s(local)), *ps.values[1:])
            apdu = attrs.evolve(apdu, sets=(attrs.evolve(ps, values=values),))
        if isinstance(apdu, GetRequest) and apdu.kind is GetKind.NEXT:
            # The blocks of one answer keep the PIID of the request that began it (the
            # dlt698 package refuses a GET-Next under another one: "not in split transfer").
            apdu = attrs.evolve(apdu, piid=self._request_piid)
        elif isinstance(apdu, ConnectRequest | GetRequest | ReleaseRequest | SetRequest
                        | ProxyRequest | ActionRequest):
            apdu = attrs.evolve(apdu, piid=self._next_piid())
            self._request_piid = self._piid
        self._rn = b""
        if isinstance(apdu, GetRequest) and self.settings.security != PLAIN:
            self._rn = self.settings.esam.random(self._meter_id())
            self._request = self._frame(encode_apdu(SecurityRequest(encode_apdu(apdu),
                                                                    rn=self._rn)))
        else:
            self._request = self._frame(encode_apdu(apdu))
        self._what = what
        self._item = item
        self._attempt = 0
        self._damaged = False
        self._blocks = []
        self.reassembler.reset()
        return [Send(self._request)]

    def _resend(self, why: str) -> list[Action]:
        self._attempt += 1
        self.resent += 1
        self._damaged = False
        self.reassembler.reset()
        return [Resent(self._attempt, why), Send(self._request)]

    def _next_item(self) -> list[Action]:
        if self._plan:
            what, apdu, item = self._plan.pop(0)
            return self._send(apdu, what, item)
        if self.settings.release and self.settings.connect:
            return self._send(ReleaseRequest(0), "RELEASE", "release")
        return self._finish()

    # -- answers ----------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> list[Action]:
        if not frame.from_server:
            self.echoes += 1
            return []
        if frame.split:
            return self._on_fragment(frame)
        return self._on_apdu(frame, frame.data)

    def _on_fragment(self, frame: Frame) -> list[Action]:
        try:
            fragment = decode_fragment(frame.data)
            if fragment.type is FragmentType.ACK:
                return []
            whole = self.reassembler.accept(fragment)
        except FrameError as e:
            self.noise += 1
            self._damaged = True
            return [Noise(e.message)]
        if whole is None:
            # Acknowledge the piece: the server sends the next.
            ack = Frame(control(Function.USER_DATA, split=True), self.settings.address,
                        self.settings.client, fragment_ack(fragment.sequence))
            pre = WAKEUP_PREAMBLE if self.settings.wakeup else 0
            return [Send(ack.encode(preamble=pre))]
        return self._on_apdu(frame, whole)

    def _on_apdu(self, frame: Frame, raw: bytes) -> list[Action]:
        try:
            apdu = decode_apdu(raw)
        except FrameError as e:
            self.noise += 1
            return [Noise(f"APDU not understood: {e.message}")]
        if isinstance(apdu, LinkRequest):
            return self._on_link(frame, apdu)
        if isinstance(apdu, ReportNotification):
            return self._on_report(frame, apdu)
        if isinstance(apdu, SecurityRequest):
            self.stale += 1
            return []
        if isinstance(apdu, SecurityResponse):
            return self._on_secured(frame, apdu)
        if self._rn and isinstance(apdu, GetResponse) \
                and (apdu.piid_acd & 0x3F) == self._request_piid:
            # A plain answer to a secured request: nothing to verify.
            refused = self._unverified("answered in plain, without a MAC")
            if refused:
                return refused
        return self._on_answer(apdu)

    def _unverified(self, why: str) -> list[Action]:
        """An answer to a secured request that no ESAM service verified: counted, or the
        read's end under refuse-unverified."""
        if self.settings.security == REFUSE_UNVERIFIED:
            return self._fail(self._error(
                f"{self._who()}: {self._what}: {why}; {self.settings.esam.name} "
                "(dlt698_security = refuse-unverified)"))  # fmt: skip
        self.unverified += 1
        return []

    def _on_secured(self, frame: Frame, response: SecurityResponse) -> list[Action]:
        if not self._rn:
            return self._fail(self._error(
                f"{self._who()}: answered with a SECURITY APDU (ESAM-protected) to a plain "
                "request; fep does not hold an ESAM (dlt698_security is plain)"))
        if response.dar is not None:
            return self._skip_item(f"secured request refused: {dar_text(response.dar)}")
        if response.ciphered:
            return self._fail(self._error(
                f"{self._who()}: answered in ESAM ciphertext; fep does not hold an ESAM "
                "(only plaintext + MAC answers are taken)"))  # fmt: skip
        try:
            inner = decode_apdu(response.data)
        except FrameError as e:
            self.noise += 1
            return [Noise(f"secured APDU not understood: {e.message}")]
        if isinstance(inner, SecurityRequest | SecurityResponse | LinkRequest
                      | ReportNotification):
            self.noise += 1
            return [Noise(f"secured APDU is a {type(inner).__name__}")]
        piid = getattr(inner, "piid_acd", None)
        if piid is not None and (piid & 0x3F) != self._request_piid:
            self.stale += 1
            return []
        if response.mac is None:
            refused = self._unverified("answered without a MAC")
        else:
            verdict = self.settings.esam.verify(self._meter_id(), self._rn, response.data,
                                                response.mac)
            if verdict is False:
                return self._fail(self._error(
                    f"{self._who()}: {self._what}: the answer's MAC does not verify "
                    f"({self.settings.esam.name})"))  # fmt: skip
            if verdict:
                self.macs_verified += 1
                refused = []
            else:
                refused = self._unverified("its MAC not verified")
        return refused or self._on_answer(inner)

    def _on_answer(self, apdu: Apdu) -> list[Action]:
        piid = getattr(apdu, "piid_acd", None)
        if piid is not None and (piid & 0x3F) != self._request_piid and not isinstance(
                apdu, ErrorResponse):  # fmt: skip
            self.stale += 1
            return []
        if isinstance(apdu, ErrorResponse):
            kind = {1: "APDU not understood", 2: "service not supported"}.get(apdu.kind, "other")
            return self._skip_item(f"error response {apdu.kind} ({kind})")
        if isinstance(apdu, ConnectResponse) and self._what == "CONNECT":
            self.connect_response = apdu
            if apdu.result != 0:
                return self._fail(self._error(
                    f"{self._who()}: CONNECT refused (result {apdu.result})"))  # fmt: skip
            return self._next_item()
        if isinstance(apdu, ReleaseResponse) and self._what == "RELEASE":
            return self._finish()
        if isinstance(apdu, GetResponse):
            return self._on_get(apdu)
        if isinstance(apdu, ProxyResponse):
            return self._on_proxy(apdu)
        if isinstance(apdu, ActionResponse) and isinstance(self._item, tuple) \
                and self._item[0] == "action":
            ((omd_done, dar, _),) = [(r.omd, r.dar, r.data) for r in apdu.results[:1]] or \
                [(self._item[1], 255, None)]
            if dar != 0:
                return self._fail(self._error(
                    f"{self._who()}: {self._what} refused: {dar_text(dar)}", ActionRefused))
            self.actions_done.append(str(omd_done))
            return self._next_item()
        if isinstance(apdu, SetResponse) and isinstance(self._item, tuple) \
                and self._item[0] == "set":
            for oad, dar in apdu.results:
                if dar != 0:
                    return self._fail(self._error(
                        f"{self._who()}: SET of {oad} refused: {dar_text(dar)}",
                        ActionRefused))  # fmt: skip
                self.sets_done.append(str(oad))
            return self._next_item()
        if isinstance(apdu, SetResponse) and self._item == "clock":
            ((_, dar),) = apdu.results[:1] or ((None, 255),)
            if dar != 0:
                return self._fail(self._error(
                    f"{self._who()}: clock set refused: {dar_text(dar)}"))  # fmt: skip
            self.clock_set = True
            return self._next_item()
        self.stale += 1
        return []

    def _on_link(self, frame: Frame, request: LinkRequest) -> list[Action]:
        self.links += 1
        data = link_answer(Frame(frame.control, self.settings.address, self.settings.client),
                           request, self.now(), self.settings.tz,
                           WAKEUP_PREAMBLE if self.settings.wakeup else 0)  # fmt: skip
        actions: list[Action] = [Send(data), Linked(request.type.name.lower(),
                                                    frame.server.address)]
        if self._what == "CONNECT" and request.type is LinkType.LOGIN:
            # A terminal refuses an association before its login is answered: ask again
            # (the answer to the first CONNECT, if any, carries the old PIID and is dropped).
            actions += self._send(self._connect_request(), "CONNECT", None)
        return actions

    def _on_report(self, frame: Frame, report: ReportNotification) -> list[Action]:
        """A report is handed over, not acknowledged: its records must be kept before the
        acknowledgement goes (nothing acknowledged is lost), which a read session cannot
        promise before it ends; unacknowledged, the terminal sends it again to the path
        that keeps it (``ReportReceived.ack``)."""
        self.reports += 1
        s = self.settings
        return [report_received(Frame(frame.control, s.address, s.client), report,
                                meter=s.meter or frame.server.address, tz=s.tz,
                                received=self.now(),
                                preamble=WAKEUP_PREAMBLE if s.wakeup else 0)]  # fmt: skip

    def _on_get(self, response: GetResponse) -> list[Action]:
        if response.kind is GetKind.NEXT:
            if response.dar is not None:
                return self._skip_item(f"next block refused: {dar_text(response.dar)}")
            self._blocks.append(response)
            if not response.last:
                if len(self._blocks) >= self.settings.max_blocks:
                    return self._skip_item(f"more than {self.settings.max_blocks} blocks")
                request = GetRequest(GetKind.NEXT, 0, block=response.block)
                what, item, blocks = self._what, self._item, self._blocks
                actions = self._send(request, what, item)
                self._blocks = blocks
                return actions
            results = tuple(r for b in self._blocks for r in b.results)
            records = _merged(r for b in self._blocks for r in b.records)
            self._blocks = []
        else:
            results, records = response.results, response.records
        if self._item == "read-back":
            meter = self._meter_id()
            self.read_back += [(meter, r) for r in results]
            return self._next_item()
        actions = self._take(results, records)
        return actions + self._next_item()

    def _take(self, results: Sequence[ResultNormal],
              records: Sequence[ResultRecord]) -> list[Action]:  # fmt: skip
        s = self.settings
        meter = s.meter or s.address.address
        received = self.now()
        actions: list[Action] = []
        for result in results:
            try:
                self.records += readings(result, meter=meter, tz=s.tz, received=received)
            except NoMapping as e:
                why = dar_text(result.dar) if result.dar is not None else str(e)
                self.skipped.append((str(result.oad), why))
                actions.append(Skipped(str(result.oad), why))
        period = self._item.period if isinstance(self._item, RecordRead) else None
        for record in records:
            try:
                got, skipped = record_records(record, meter=meter, tz=s.tz, received=received,
                                              period=period)  # fmt: skip
            except NoMapping as e:
                why = dar_text(record.dar) if record.dar is not None else str(e)
                self.skipped.append((str(record.oad), why))
                actions.append(Skipped(str(record.oad), why))
                continue
            self.records += got
            for item, why in skipped:
                self.skipped.append((item, why))
                actions.append(Skipped(item, why))
        return actions

    def _proxied(self, tsa: bytes) -> ProxyRead | None:
        return next((p for p in self.settings.proxies if p.tsa == tsa), None)

    def _on_proxy_action(self, response: ProxyResponse) -> list[Action]:
        item = self._item
        assert isinstance(item, tuple) and isinstance(item[1], ProxyRead)
        proxy: ProxyRead = item[1]
        results = next((done for tsa, done in response.actions if tsa == proxy.tsa), None)
        if not results:
            return self._fail(self._error(
                f"{self._who()}: {self._what}: the terminal gave no result for meter "
                f"{proxy.address}", ActionRefused))  # fmt: skip
        for result in results:
            if result.dar != 0:
                return self._fail(self._error(
                    f"{self._who()}: {self._what} refused: {dar_text(result.dar)}",
                    ActionRefused))  # fmt: skip
            self.actions_done.append(str(result.omd))
            if result.read is not None:
                self.read_back.append((proxy.meter or proxy.address, result.read))
        return self._next_item()

    def _on_proxy_set(self, response: ProxyResponse) -> list[Action]:
        item = self._item
        assert isinstance(item, tuple) and isinstance(item[1], ProxyRead)
        proxy: ProxyRead = item[1]
        results = next((done for tsa, done in response.sets if tsa == proxy.tsa), None)
        if not results:
            return self._fail(self._error(
                f"{self._who()}: {self._what}: the terminal gave no result for meter "
                f"{proxy.address}", ActionRefused))  # fmt: skip
        meter = proxy.meter or proxy.address
        for result in results:
            if result.dar != 0:
                return self._fail(self._error(
                    f"{self._who()}: {self._what} refused: {dar_text(result.dar)}",
                    ActionRefused))  # fmt: skip
            self.sets_done.append(str(result.oad))
            if result.read is not None:
                self.read_back.append((meter, result.read))
        if proxy.set_clock:
            self.clock_set = True
        return self._next_item()

    def _on_transparent(self, response: ProxyResponse) -> list[Action]:
        item = self._item
        assert isinstance(item, tuple) and isinstance(item[1], ProxyTransparent)
        port = str(item[1].port)
        self.forwarded.append((port, response.command, response.dar))
        actions: list[Action] = []
        if response.dar is not None:
            why = dar_text(response.dar)
            self.skipped.append((self._what, why))
            actions.append(Skipped(self._what, why))
        return actions + self._next_item()

    def _on_proxy(self, response: ProxyResponse) -> list[Action]:
        kind = self._item[0] if isinstance(self._item, tuple) else None
        if response.kind in (5, 6) and kind == "proxy-action":
            return self._on_proxy_action(response)
        if response.kind in (3, 4) and kind == "proxy-set":
            return self._on_proxy_set(response)
        if response.kind == 7 and kind == "transparent":
            return self._on_transparent(response)
        if response.kind not in (1, 2):
            self.stale += 1
            return []
        s = self.settings
        received = self.now()
        actions: list[Action] = []
        answers: list[tuple[bytes, Sequence[ResultNormal], Sequence[ResultRecord]]] = [
            (tsa, results, ()) for tsa, results in response.meters]
        if response.record is not None:
            answers.append((response.tsa, (), (response.record,)))
        for tsa, results, records in answers:
            proxy = self._proxied(tsa)
            address = tsa_address(tsa) if tsa else "?"
            if proxy is None:
                actions.append(Skipped(f"meter {address}", "answered but not asked"))
                continue
            meter = proxy.meter or proxy.address
            for result in results:
                try:
                    self.records += readings(result, meter=meter, tz=s.tz, received=received)
                except NoMapping as e:
                    why = dar_text(result.dar) if result.dar is not None else str(e)
                    self.skipped.append((f"{meter}/{result.oad}", why))
                    actions.append(Skipped(f"{meter}/{result.oad}", why))
            period = self._item.period if isinstance(self._item, RecordRead) else None
            for record in records:
                try:
                    got, skipped = record_records(record, meter=meter, tz=s.tz,
                                                  received=received, period=period)
                except NoMapping as e:
                    why = dar_text(record.dar) if record.dar is not None else str(e)
                    self.skipped.append((f"{meter}/{record.oad}", why))
                    actions.append(Skipped(f"{meter}/{record.oad}", why))
                    continue
                self.records += got
                for item, why in skipped:
                    self.skipped.append((f"{meter}/{item}", why))
                    actions.append(Skipped(f"{meter}/{item}", why))
        return actions + self._next_item()

    def _skip_item(self, why: str) -> list[Action]:
        if isinstance(self._item, tuple) and self._item[0] in ("action", "proxy-action",
                                                               "proxy-set", "set"):
            return self._fail(self._error(f"{self._who()}: {self._what} refused: {why}",
                                          ActionRefused))
        if self._what in ("CONNECT", "RELEASE"):
            if self._what == "RELEASE":
                return self._finish()
            return self._fail(self._error(f"{self._who()}: CONNECT failed: {why}"))
        self.skipped.append((self._what, why))
        return [Skipped(self._what, why), *self._next_item()]

    # -- the end ----------------------------------------------------------------------------

    def _finish(self) -> list[Action]:
        self.state = State.DONE
        return [Finished(tuple(self.records))]

    def _fail(self, error: ProtocolError) -> list[Action]:
        self.state = State.DONE
        return [Failed(error)]


__all__ = [
    "DEFAULT_ITEMS",
    "ActionRefused",
    "DEFAULT_METER_TZ",
    "Action",
    "ClientSettings",
    "Dlt698Client",
    "Failed",
    "Finished",
    "Linked",
    "Noise",
    "ProxyRead",
    "RecordRead",
    "ReportReceived",
    "Resent",
    "Send",
    "Skipped",
    "date_time_of",
    "link_response",
]
