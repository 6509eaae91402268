"""Writes the seed corpus of the targets in this package from the published captures and
fixtures in tests/ (and fep's simulators for the C12.19 table sets they lack):
``python -m tests.fuzz.seeds``. Existing files are kept (crash regressions live beside the
seeds); each target directory's SOURCES says where its seeds come from."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tests.fuzz.parts import join, stream_chunks
from tests.fuzz.targets import CORPUS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _named_hex(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for line in path.read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        out[name.strip()] = bytes.fromhex(text)
    return out


def _iec(name: str) -> bytes:
    return (FIXTURES / "iec62056_21" / name).read_bytes().partition(b"\n")[2]


def c12() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from fep.protocols.ansi_c12 import c1218, tables
    from fep.protocols.ansi_c12.procedures import ProcedureRequest, RemoteReset
    from fep.sim.ansi_c12 import SimulatedC12Meter
    from tests.fuzz.c12_targets import CONTROL_TABLES, TABLES

    packets = _named_hex(FIXTURES / "ansi_c12" / "published_packets.txt")
    published = _named_hex(FIXTURES / "ansi_c12" / "published_tables.txt")
    meter = SimulatedC12Meter()
    sim: dict[int, bytes] = {}
    for n in range(80):
        table_bytes = meter.table(n)
        if table_bytes is not None:
            sim[n] = table_bytes
    messages = []
    for p in packets.values():
        packet = c1218.PacketDecoder().receive(p)[0]
        assert isinstance(packet, c1218.Packet)
        messages.append(packet.data)
    answers = [meter.answer(m) for m in messages] + [
        meter.answer(bytes.fromhex("3f 0040 000000 0010")),
    ]
    table_seeds = []
    for table in TABLES:
        if table in sim:
            parts = [sim[0], *(sim.get(n, b"") for n in tables.table_needs(table)), sim[table]]
            table_seeds.append((f"sim_st{table}", bytes([TABLES.index(table)]) + join(parts)))
    for name, data in published.items():
        table = int(name.split("_st")[1])
        if table in TABLES:
            needs = [published.get(name.replace(f"st{table}", f"st{n}"), sim.get(n, b""))
                     for n in tables.table_needs(table)]
            table_seeds.append((name, bytes([TABLES.index(table)]) + join([sim[0], *needs, data])))
    st64 = [("sim_st64", join([sim[0], sim[61], sim[62], sim[64]]))]
    # The control tables after a demand reset with a self-read (ST7, ST8, ST25, ST26 full).
    meter.answer(bytes.fromhex("20"))
    meter.answer(bytes.fromhex("60 0400 08"))
    meter.answer(bytes.fromhex("50 0002") + b"fep".ljust(10))
    meter.answer(b"\x51" + b"secret".ljust(20, b"\0"))
    initiate = ProcedureRequest(9, 42, RemoteReset(True, True).encode()).encode(meter.config)
    meter.answer(bytes(c1218.Write(7, initiate).encode()))
    control = {n: meter.table(n) for n in CONTROL_TABLES}
    control_seeds = [
        (f"sim_st{table}", bytes([CONTROL_TABLES.index(table)])
         + join([sim[0], *(sim.get(n, b"") for n in tables.table_needs(table)), data]))
        for table, data in control.items() if data is not None
    ]
    return {
        "c1218_packet": ("tests/fixtures/ansi_c12/published_packets.txt",
                         [(k, stream_chunks(v)) for k, v in packets.items()]
                         + [("all", stream_chunks(b"".join(packets.values()), 5))]),
        "c1218_link": ("tests/fixtures/ansi_c12/published_packets.txt (with ACKs)",
                       [(k, stream_chunks(b"\x06" + v)) for k, v in packets.items()]),
        "c1218_psem": ("requests in tests/fixtures/ansi_c12/published_packets.txt and the "
                       "answers fep.sim.ansi_c12 gives them",
                       [(f"request{i}", m) for i, m in enumerate(messages)]
                       + [(f"answer{i}", a) for i, a in enumerate(answers)]),
        "c1219_table": ("tables of fep.sim.ansi_c12.SimulatedC12Meter (with its ST0) and "
                        "tests/fixtures/ansi_c12/published_tables.txt", table_seeds),
        "c1219_st64": ("ST0/61/62/64 of fep.sim.ansi_c12.SimulatedC12Meter", st64),
        "c1219_control": ("ST7/8/25/26 of fep.sim.ansi_c12.SimulatedC12Meter after a demand "
                          "reset with a self-read", control_seeds),
    }


def dlt645() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from fep.protocols.dlt645 import services
    from fep.protocols.dlt645.frames import decode_frame

    frames = _named_hex(FIXTURES / "dlt645" / "published_frames.txt")
    reads = []
    for name, raw in frames.items():
        try:
            frame = decode_frame(raw.lstrip(b"\xfe"))
            result = services.decode_read(frame)
        except Exception:
            continue
        reads.append((name, b"\x04" + result.di.to_bytes(4, "big") + result.data))
    from datetime import UTC, datetime, timedelta

    from fep.sim.dlt645 import SimulatedDlt645Meter

    now = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    meter = SimulatedDlt645Meter(address="000000000102", clock=now.timestamp, events=[])
    meter.raise_event(0x03300D00, now - timedelta(minutes=5), now - timedelta(minutes=4))
    report = meter.report().encode(preamble=2)
    status = meter.answer(services.read_data(meter.address, 0x04001501))
    record = meter.answer(services.read_data(meter.address, 0x03300D01))
    reset = meter.answer(services.write_data(meter.address, 0x04001503, bytes(12),
                                             services.Password(2, "000000")))
    energy = meter.answer(services.read_data(meter.address, 0x00010000))
    exchange = report + b"".join(f.encode() for f in (status, record, reset) if f is not None)
    junk = report[:-2] + bytes([report[-2] ^ 1]) + report[-1:]
    reports = [("report_exchange", b"\x07" + exchange),
               ("report_twice_energy_junk", b"\x1f" + report + report
                + (energy.encode() if energy is not None else b"") + junk)]
    return {
        "dlt645_reports": ("fep.sim.dlt645: a meter's status word report, its answers to the "
                           "04001501 and 03300D01 reads and the 04001503 reset (byte 0: piece "
                           "size - 1); the report twice, an energy report, a damaged report",
                           reports),
        "dlt645_frame": ("tests/fixtures/dlt645/published_frames.txt",
                         [(k, stream_chunks(v)) for k, v in frames.items()]
                         + [("all", stream_chunks(b"".join(frames.values()), 7))]),
        "dlt645_dataid": ("read answers of tests/fixtures/dlt645/published_frames.txt (mode 4: "
                          "raw DI then data)", reads),
    }


def dlt698() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from fep.protocols.dlt698.apdu import GetResponse, decode_apdu
    from fep.protocols.dlt698.data import encode_data
    from fep.protocols.dlt698.frames import (
        Frame,
        ServerAddress,
        control,
        decode_frame,
        split_apdu,
    )

    items = _named_hex(FIXTURES / "dlt698" / "published_frames.txt")
    frames = {k: v for k, v in items.items() if k.startswith("frame_")}
    apdus = {k: v for k, v in items.items() if k.startswith("apdu_")}
    apdus.update({k: decode_frame(v).data for k, v in frames.items()})
    apdus.update(_more_apdus())
    big = apdus["apdu_get_record_response"]
    address = ServerAddress("000000123456")
    split = b"".join(Frame(control(from_server=True, split=True), address, 0, p.encode())
                     .encode() for p in split_apdu(big, 16))  # fmt: skip
    values = []
    for name, raw in apdus.items():
        apdu = decode_apdu(raw)
        if isinstance(apdu, GetResponse):
            for result in apdu.results:
                if result.data is not None:
                    values.append((name, encode_data(result.data)))
            for record in apdu.records:
                for row in record.rows or ():
                    values.append((name, b"".join(encode_data(d) for d in row)))
    return {
        "dlt698_frame": ("tests/fixtures/dlt698/published_frames.txt (and its record "
                         "response in split frames of 16 bytes)",
                         [(k, stream_chunks(v)) for k, v in frames.items()]
                         + [("all", stream_chunks(b"\xfe\xfe" + b"".join(frames.values()), 7)),
                            ("split_record_response", stream_chunks(split, 31))]),
        "dlt698_apdu": ("the APDUs of tests/fixtures/dlt698/published_frames.txt (alone and "
                        "in its frames), and the SECURITY and PROXY APDUs of "
                        "tests/protocols/dlt698/test_security.py and test_proxy_kinds.py (the "
                        "dlt698 package's bytes)",
                        list(apdus.items())),
        "dlt698_data": ("the values in the GET answers of "
                        "tests/fixtures/dlt698/published_frames.txt", values),
        "dlt698_client": ("a session of fep.sim.dlt698 (with a login and a concentrator), "
                          "the meter's side", [("sim_session", stream_chunks(_session()))]),
        "dlt698_terminal": ("the logins of tests/fixtures/dlt698/published_frames.txt and a "
                            "power-down report of fep.sim.dlt698",
                            [("logins_and_report", stream_chunks(_terminal()))]),
        "dlt698_push": ("the logins of tests/fixtures/dlt698/published_frames.txt and a "
                        "power-down report of fep.sim.dlt698, twice (a repeat), with line "
                        "noise and wake-up bytes",
                        [("logins_and_report", stream_chunks(_terminal())),
                         ("repeat_and_noise", stream_chunks(b"\xfe\xfe" + _terminal()
                                                            + b"noise\x68\x16"
                                                            + _terminal(), 5))]),
        "dlt698_identify": ("the logins of tests/fixtures/dlt698/published_frames.txt and of "
                            "fep.sim.dlt698, after modem chatter and wake-up bytes",
                            [("peer_login", stream_chunks(items["frame_peer_login"])),
                             ("chatter_then_login", stream_chunks(
                                 b"AT+CIPSTART\r\n\xfe\xfe\xfe\xfe" + _terminal(), 3))]),
    }


def _more_apdus() -> dict[str, bytes]:
    """The SECURITY-Request/Response fixtures (the dlt698 package's bytes) and the PROXY
    kinds the tests build."""
    from tests.protocols.dlt698 import test_proxy_kinds as proxy
    from tests.protocols.dlt698 import test_security as sec

    out = {f"security_{n}": getattr(sec, n) for n in (
        "PLAIN_RN", "PLAIN_MAC", "DAR_ONLY", "CIPHER_RN_MAC", "CIPHER_SID_MAC", "PLAIN_SID",
        "CIPHER_SID_MAC_RESPONSE")}
    out.update({f"proxy_{name}": bytes.fromhex(text) for name, (text, _) in proxy.PEER.items()})
    return out


def _terminal() -> bytes:
    from datetime import UTC, datetime

    from fep.protocols.dlt698.apdu import encode_apdu
    from fep.protocols.dlt698.frames import Frame, control
    from fep.sim.dlt698 import SimulatedDlt698Meter

    items = _named_hex(FIXTURES / "dlt698" / "published_frames.txt")
    sim = SimulatedDlt698Meter("000000123456", clock=datetime(2024, 1, 1, tzinfo=UTC).timestamp)
    report = Frame(control(from_server=True, client_started=False), sim.server, 0,
                   encode_apdu(sim.report_outage()))
    return items["frame_peer_login"] + sim.login() + report.encode()


def _session() -> bytes:
    """What fep's simulated concentrator sends in the session the dlt698_client target
    runs: a login, then its answers to the client's requests."""
    from datetime import UTC, datetime

    from fep.protocols.dlt698.client import (
        ClientSettings,
        Dlt698Client,
        ProxyRead,
        RecordRead,
        Send,
    )
    from fep.protocols.dlt698.data import OAD
    from fep.protocols.dlt698.frames import FrameDecoder
    from fep.sim.dlt698 import SimulatedDlt698Meter

    at = datetime(2024, 1, 1, tzinfo=UTC)
    child = SimulatedDlt698Meter("000000000001", clock=at.timestamp)
    sim = SimulatedDlt698Meter("000000123456", clock=at.timestamp,
                               children={child.address: child})
    client = Dlt698Client(ClientSettings(
        address="000000123456", items=(OAD(0x0010, 2), OAD(0x2000, 2)),
        records=(RecordRead(OAD(0x5004, 2), last=1),),
        proxies=(ProxyRead("000000000001", (OAD(0x0010, 2),)),)), now=lambda: at)
    wire = sim.login()
    pending = list(client.start()) + list(client.receive(wire))
    while not client.done and pending:
        out = b""
        for action in pending:
            if isinstance(action, Send):
                for frame in FrameDecoder().receive(action.data):
                    out += b"".join(a.encode() for a in sim.answer(frame))
        wire += out
        pending = list(client.receive(out)) if out else []
    return wire


def iec() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder

    wires = {"iskra_mt174": _iec("iskra_mt174.txt"),
             "landis_gyr_e350_m26": _iec("landis_gyr_e350_m26.txt")}
    readouts = []
    for name, wire in wires.items():
        for message in FrameDecoder().receive(wire):
            if isinstance(message, DataBlock):
                readouts.append((name, message.data))
    return {
        "iec_frames": ("tests/fixtures/iec62056_21 (sign-on, ACK and the two readouts)",
                       [(k, stream_chunks(v)) for k, v in wires.items()]
                       + [("sign_on_ack", stream_chunks(b"/?!\r\n\x06050\r\n"))]),
        "iec_readout": ("the data blocks of tests/fixtures/iec62056_21", readouts),
        "iec_programming": (
            "the meter's side of the DRS110M capture and of a profile read "
            "(tests/protocols/test_iec62056_21_programming.py)",
            [(k, stream_chunks(v, 7)) for k, v in programming_sides().items()]),
        "iec_profile": ("the published EMH, Metcom and LEM P.01 answers and a P.98 logbook "
                        "(tests/protocols/test_iec62056_21_profile.py)",
                        list(profile_answers().items())),
    }


def programming_sides() -> dict[str, bytes]:
    from fep.protocols.iec62056_21.frames import DataBlock
    from tests.protocols.test_iec62056_21_profile import EMH_P01
    from tests.protocols.test_iec62056_21_programming import DRS_IDENT, DRS_P0

    ack = b"\x06"
    return {
        "profile_then_write": DRS_IDENT + DRS_P0 + ack + DataBlock.build(EMH_P01).encode()
        + ack,
        "error": DRS_IDENT + DRS_P0 + ack + DataBlock.build(b"(ERROR)").encode(),
        "nak_break": DRS_IDENT + DRS_P0 + b"\x15" + b"\x01B0\x03q",
    }


def profile_answers() -> dict[str, bytes]:
    from tests.protocols.test_iec62056_21_profile import EMH_P01, LEM_P01, METCOM_P01

    return {"emh": EMH_P01, "metcom": METCOM_P01, "lem": LEM_P01,
            "logbook": b"P.98(0231201010203)(00000080)()(0)\r\n"
                       b"P.98(0231201011003)(000000C0)()(1)(C.5.3)()(2)\r\n"}


def modbus() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from fep.protocols.modbus import rtu, tcp
    from tests.protocols.modbus.published import PDU_EXAMPLES, RTU_READ_HOLDING_QUERY

    pdus = [(f"{k}_{w}", p) for k, pair in PDU_EXAMPLES.items()
            for w, p in zip(("request", "response"), pair, strict=True)]
    return {
        "modbus_pdu": ("tests/protocols/modbus/published.py (Modbus spec V1.1b3 sections 6, 7)",
                       pdus),
        "modbus_rtu_stream": ("tests/protocols/modbus/published.py, framed with the RTU CRC",
                              [("pi_mbus_300_query", b"\x00" + stream_chunks(
                                  RTU_READ_HOLDING_QUERY))]
                              + [(k, b"\x05" + stream_chunks(rtu.encode(17, p))) for k, p in pdus]),
        "modbus_tcp_stream": ("tests/protocols/modbus/published.py in MBAP frames",
                              [(k, stream_chunks(tcp.encode(1, 1, p))) for k, p in pdus]),
    }


def modem() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    published = _named_hex(FIXTURES / "sms" / "published_pdus.txt")
    deliver = published["dreamfabric_deliver_hellohello"].hex().upper()
    answers = [
        ("ok", b"\x03" + stream_chunks(b"AT\r\r\nOK\r\n")),
        ("cmgl", b"\x0b" + stream_chunks(
            b"AT+CMGL=4\r\r\n+CMGL: 1,0,,24\r\n" + deliver.encode() + b"\r\n\r\nOK\r\n")),
        ("cmgs", b"\x0a" + stream_chunks(b"AT+CMGS=20\r\r\n> \r\n+CMGS: 51\r\n\r\nOK\r\n")),
        ("connect", b"\x07" + stream_chunks(
            b"ATD+5411\r\r\nCONNECT 9600\r\nmeter data\r\n\r\nNO CARRIER\r\n")),
        ("urc", b"\x03" + stream_chunks(
            b"\r\n+CMTI: \"SM\",3\r\n\r\nRING\r\n\r\n+CMT: ,24\r\n" + deliver.encode()
            + b"\r\n0\r\n4\r\n+CME ERROR: 10\r\n")),
    ]
    lines = [
        ("cmgr", b"+CMGR: 0,,24\n" + deliver.encode()),
        ("cmgr_text", b'+CMGR: "REC UNREAD","+31628870634",,"11/01/09,10:26:26+04"\nhello'),
        ("cmgs", b"+CMGS: 51"),
        ("cpms", b'+CPMS: "SM",3,30,"SM",3,30,"SM",3,30'),
        ("cmti", b'"SM",3'),
        ("cmt", b",24\n" + deliver.encode()),
        ("cds", b"6,27,\"+31628870634\",145,\"11/01/09,10:26:26+04\",\"11/01/09,10:26:30+04\",0"),
    ]
    recorded = []
    for script in sorted((FIXTURES / "modems").glob("*.txt")):
        said = [line[2:] for line in script.read_text("utf-8").splitlines()
                if line.startswith("< ")]
        recorded.append((script.stem, "\n".join(said).encode("latin-1")))
    recorded.append(("mc75i_cnmi", b'+CNMI: (0-3),(0,1),(0,2,3),(0,2),(1)\n'
                                   b'+CPMS: ("ME","SM","MT"),("ME","SM","MT"),("SM","MT")'))
    return {
        "modem_dialect": ("the recorded answers of tests/fixtures/modems/*.txt (sources named "
                          "there) and gammu pull request #1207 (Cinterion MC75i)", recorded),
        "at_engine": ("hand-written modem answers around the SMS-DELIVER of "
                      "tests/fixtures/sms/published_pdus.txt", answers),
        "sms_pdu": ("tests/fixtures/sms/published_pdus.txt", list(published.items())),
        "sms_at": ("hand-written 3GPP TS 27.005 answers (the PDU from "
                   "tests/fixtures/sms/published_pdus.txt)", lines),
    }


def channels() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from fep.channels.identify import encode_binary_registration
    from fep.channels.rfc2217 import COM_PORT_OPTION, DO, DONT, ECHO, IAC, SB, SE, SGA, WILL

    server = (bytes((IAC, WILL, SGA, IAC, DONT, ECHO, IAC, DO, COM_PORT_OPTION))
              + bytes((IAC, SB, 44, 101, 0, 0, 0x25, 0x80, IAC, SE))
              + bytes((IAC, SB, 44, 102, 8, IAC, SE)) + bytes((IAC, SB, 44, 103, 1, IAC, SE))
              + bytes((IAC, SB, 44, 104, 1, IAC, SE)) + bytes((IAC, SB, 44, 105, 1, IAC, SE))
              + b"meter data \xff\xff escaped")
    registration = encode_binary_registration(imei="356938035643809", serial="M1")
    return {
        "rfc2217_stream": ("the server answers of tests/channels/test_rfc2217.py",
                           [("settings", stream_chunks(server, 9)),
                            ("whole", stream_chunks(server))]),
        "gprs_identify": ("registrations as docs/channels/gprs.md and "
                          "tests/channels/test_identify.py give them, the Iskra MT174 readout",
                          [("ascii", stream_chunks(b"ID:356938035643809\r\n\x00\x01")),
                           ("binary", stream_chunks(registration)),
                           ("iec", stream_chunks(_iec("iskra_mt174.txt"))),
                           ("garbage_then_ascii", stream_chunks(b"\xff" * 40
                                                                + b"ID:1234\n", 3))]),
    }


def records() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Reading, Severity
    from fep.serialize import encode_records
    from fep.store.spool import encode_batch

    now = datetime(2024, 1, 1, tzinfo=UTC)
    obis = ObisCode.parse("1-0:1.8.0*255")
    records: list[Reading | IntervalBlock | MeterEvent] = [
        Reading("m1", obis, Decimal("12.5"), None, 0, now, now),
        IntervalBlock("m1", obis, now, timedelta(minutes=15), (Decimal(1), None), (), None, 0, now),
        MeterEvent("m1", "std-1", EventKind.POWER_OUTAGE, Severity.MAJOR, now, "down", now),
    ]
    return {
        "spool_records": ("fep.serialize.encode_records of one record of each kind",
                          [("three", encode_records(records))]
                          + [(f"one{i}", encode_records([r])) for i, r in enumerate(records)]),
        "spool_batch": ("fep.store.spool.encode_batch of one record of each kind",
                        [("three", encode_batch(records))]
                        + [(f"one{i}", encode_batch([r])) for i, r in enumerate(records)]),
        "control_request": ("the requests docs/operators.md shows",
                            [("sessions", b'{"command": "sessions"}'),
                             ("ping", b'{"command": "ping"}\n{"command": 1}')]),
    }


def gw3761() -> dict[str, tuple[str, Iterable[tuple[str, bytes]]]]:
    from datetime import date, datetime

    from fep.protocols.dlt645 import services as dlt645_services
    from fep.protocols.gw3761 import formats, services
    from fep.protocols.gw3761.frames import Address, Afn, FrameDecoder
    from fep.protocols.gw3761.services import (
        CurveRequest,
        EventsRequest,
        ForwardRequest,
        Master,
    )
    from fep.sim.concentrator import make_concentrator
    from tests.protocols.gw3761.published import FRAMES

    sim = make_concentrator(3, clock=lambda: 1_709_280_000.0)
    sim.max_user = 200
    master = Master(Address("4403", 4))
    day = date(2024, 2, 29)
    forward = dlt645_services.read_data(sim.meters[0].address, 0x00010000).encode()
    asks = {
        "c1_clock": (Afn.CLASS1, [0], [2], None),
        "c1_f129": (Afn.CLASS1, [1, 2], [129], None),
        "c1_f25_f33": (Afn.CLASS1, [1], [25, 33], None),
        "c2_f161": (Afn.CLASS2, [1, 2], [161, 162], day),
        "c2_f177": (Afn.CLASS2, [1], [177], date(2024, 2, 1)),
        "c2_f185": (Afn.CLASS2, [1], [185], day),
        "c2_curve": (Afn.CLASS2, [1], [101, 81, 89, 92, 105],
                     CurveRequest(datetime(2024, 2, 29, 0, 15), 1, 8)),
        "c3_events": (Afn.CLASS3, [0], [1], EventsRequest(0, 5)),
        "archive": (Afn.QUERY_PARAMETERS, [0], [10], ()),
        "forward": (Afn.FORWARD, [0], [1], ForwardRequest(31, forward)),
    }
    frames = [(k, stream_chunks(v)) for k, v in FRAMES.items()]
    frames.append(("all", stream_chunks(b"".join(FRAMES.values()), 9)))
    units = []
    layouts = sorted(services.LAYOUTS)
    for name, (afn, points, fns, value) in asks.items():
        data = b"".join(services.request_units(afn, points, fns, value))
        request = master.request(afn, data)
        wire = b"".join(sim.answer_bytes(request))
        frames.append((f"sim_{name}", stream_chunks(request.encode() + wire, 31)))
        index = layouts.index((afn, fns[0]))
        units.append((f"{name}_request", bytes([index * 2]) + data))
        answer = next(f for f in FrameDecoder().receive(wire) if f.afn == afn)
        units.append((f"{name}_answer", bytes([index * 2 + 1]) + answer.data))
    names = sorted(formats.FORMATS)
    samples = {"A.1": "512023071018", "A.14": "7856341200", "A.25": "450381", "A.2": "2391",
               "A.15": "3014240709"}
    for name, text in samples.items():
        mode = 128 + ((names.index(name) - 128) % len(names))
        units.append((f"format_{name}", bytes([mode]) + bytes.fromhex(text)))
    from fep.protocols.gw3761.services import EventRecord

    dial = make_concentrator(2, clock=lambda: 1_709_280_000.0, acd_on_link=True)
    now = dial.now()
    login, beat = dial.login(), dial.heartbeat()
    report = dial.report_event(EventRecord(13, now, 1, True, {"flags": 8}))
    damaged = bytearray(beat)
    damaged[-2] ^= 1
    fetch_answer = b"".join(dial.answer_bytes(master.request(Afn.CLASS3, b"".join(
        services.request_units(Afn.CLASS3, [0], [1], EventsRequest(0, 3))))))
    dialin = [
        ("login", b"\x07" + login),
        ("login_beat_report", b"\x0c" + login + beat + report),
        ("garbage_login_junk", b"\x02AT\r\n" + login + bytes(damaged) + beat),
        ("fetch_answer", b"\x1f" + login + report + fetch_answer),
        ("published_login", b"\x00" + FRAMES["iteye_login"] + FRAMES["node_login"]),
        ("answer_with_ec", b"\x05" + login + b"".join(dial.answer_bytes(master.request(
            Afn.CLASS1, b"".join(services.request_units(Afn.CLASS1, [1], [129])))))),
    ]
    return {
        "gw3761_dialin": ("fep.sim.concentrator: a login (byte 0: piece size - 1), heartbeats "
                          "with ACD, an event report, a damaged heartbeat, an event fetch's "
                          "answer, a read's answer with EC; the published logins", dialin),
        "gw3761_frame": ("tests/fixtures/gw3761/published_frames.txt (each, and all in 10-byte "
                         "pieces); sim_*: a master request and fep.sim.concentrator's answer "
                         "(200-byte frames) at 2024-03-01 16:00 terminal time", frames),
        "gw3761_units": ("data units of the sim_* requests and answers of gw3761_frame (mode = "
                         "layout index x 2 + uplink); format_*: the appendix A examples of "
                         "tests/protocols/gw3761/test_formats.py (mode 128 + format index)",
                         units),
    }


def main() -> None:
    for family in (c12, dlt645, dlt698, gw3761, iec, modbus, modem, channels, records):
        for target, (source, seeds) in family().items():
            directory = CORPUS / target
            directory.mkdir(parents=True, exist_ok=True)
            names = []
            for name, data in seeds:
                digest = hashlib.sha1(data).hexdigest()[:12]
                path = directory / f"seed-{name}-{digest}"
                if not any(p.name.endswith(digest) for p in directory.iterdir()):
                    path.write_bytes(data)
                names.append(path.name)
            sources = directory / "SOURCES"
            if not sources.exists():
                sources.write_text(f"seed-*: {source}\n")
            print(f"{target}: {len(names)} seeds")


if __name__ == "__main__":
    main()
