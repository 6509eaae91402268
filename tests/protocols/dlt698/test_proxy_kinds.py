"""PROXY kinds 3, 4, 6 and 7 (set, set-then-get, action-then-get, transparent forwarding):
the codec byte for byte with the dlt698 package's ``encode_apdu`` (the fixtures below are
its bytes, dlt698 1.0.1), the client and the simulated terminal."""

from __future__ import annotations

from datetime import timedelta

import attrs
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlt698.apdu import (
    ActionResult,
    ProxyAction,
    ProxyRequest,
    ProxyResponse,
    ProxySet,
    ProxySetResult,
    ProxyTransparent,
    ResultNormal,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.client import (
    ActionRefused,
    ClientSettings,
    Dlt698Client,
    Failed,
    Finished,
    ProxyRead,
    Skipped,
)
from fep.protocols.dlt698.data import COMDCB, OAD, OMD, Data, DataType, integer
from fep.sim.dlt698 import SimulatedDlt698Meter
from tests.protocols.dlt698.test_client import NOW, NOW_DT, meter, run
from tests.system import require_module

TSA = bytes.fromhex("05000000000001")
CLOCK = OAD(0x4000, 2)
RELAY = OAD(0xF205, 2, 1)
FIVE = integer(DataType.LONG_UNSIGNED, 5)
TRIP = OMD(0x8000, 129)
PORT = OAD(0xF201, 2, 1)

# dlt698 1.0.1 encode_apdu(ProxyRequest(piid=1, timeout_seconds=60, payload=[...]))
PEER = {
    "3req": ("090301003c010705000000000001001e014000020012000500",
             ProxyRequest(3, 1, 60, sets=(ProxySet(TSA, 30, ((CLOCK, FIVE),)),))),
    "4req": ("090401003c010705000000000001001e0140000200120005400002000300",
             ProxyRequest(4, 1, 60, sets=(ProxySet(TSA, 30, ((CLOCK, FIVE),),
                                                   ((CLOCK, 3),)),))),
    "6req": ("090601003c010705000000000001001e018000810000f20502010200",
             ProxyRequest(6, 1, 60, actions=(ProxyAction(TSA, 30, ((TRIP, Data.null()),),
                                                         ((RELAY, 2),)),))),
    "7req": ("090701f20102010302080100000a01f402681600",
             ProxyRequest(7, 1, 0, transparent=ProxyTransparent(
                 PORT, COMDCB(3, 2, 8, 1, 0), 10, 500, b"\x68\x16"))),
    "3resp": ("8903010107050000000000010140000200000000",
              ProxyResponse(3, 1, sets=((TSA, (ProxySetResult(CLOCK, 0),)),))),
    "4resp": ("89040101070500000000000101400002000040000200011200050000",
              ProxyResponse(4, 1, sets=((TSA, (ProxySetResult(
                  CLOCK, 0, ResultNormal(CLOCK, data=FIVE)),)),))),
    "6resp": ("89060101070500000000000101800081000000f20502010116010000",
              ProxyResponse(6, 1, actions=((TSA, (ActionResult(
                  TRIP, 0, None, ResultNormal(RELAY, data=integer(DataType.ENUM, 1))),)),))),
    "6resp_data": ("890601010705000000000001018000810000011103f20502010116010000",
                   ProxyResponse(6, 1, actions=((TSA, (ActionResult(
                       TRIP, 0, integer(DataType.UNSIGNED, 3),
                       ResultNormal(RELAY, data=integer(DataType.ENUM, 1))),)),))),
    "7resp": ("890701f2010201010268160000",
              ProxyResponse(7, 1, port=PORT, command=b"\x68\x16")),
    "7resp_dar": ("890701f201020100210000", ProxyResponse(7, 1, port=PORT, dar=33)),
}


class CodecTests(unittest.TestCase):
    def test_the_peers_bytes_round_trip(self) -> None:
        for name, (text, apdu) in PEER.items():
            raw = bytes.fromhex(text)
            self.assertEqual(decode_apdu(raw), apdu, name)
            self.assertEqual(encode_apdu(apdu), raw, name)

    def test_truncations_are_frame_errors(self) -> None:
        for name, (text, _) in PEER.items():
            raw = bytes.fromhex(text)
            for n in range(len(raw)):
                with self.assertRaises(FrameError, msg=f"{name}[:{n}]"):
                    decode_apdu(raw[:n])
        with self.assertRaises(FrameError):
            decode_apdu(bytes.fromhex("890701f201020102"))  # result choice 2

    def test_the_peer_decodes_fep_bytes_back_to_the_same(self) -> None:
        require_module("dlt698", pip="dlt698")
        from dlt698 import codec

        for name, (text, apdu) in PEER.items():
            raw = encode_apdu(apdu)
            self.assertEqual(codec.encode_apdu(codec.decode_apdu(raw)), raw, name)
            self.assertEqual(raw.hex(), text)


def terminal_with(*addresses: str) -> SimulatedDlt698Meter:
    sim = meter(address="000000009999")
    for n, address in enumerate(addresses, 1):
        sim.children[address] = meter(address=address, start_kwh=100.0 * n)
    return sim


def through(*proxies: ProxyRead, **kw: object) -> Dlt698Client:
    return Dlt698Client(ClientSettings(address="000000009999", items=(), proxies=proxies,
                                       **kw), now=lambda: NOW_DT)  # type: ignore[arg-type]


class ClientTests(unittest.TestCase):
    def test_a_clock_set_through_the_terminal(self) -> None:
        sim = terminal_with("000000000001")
        client = through(ProxyRead("000000000001", items=(), set_clock=True))
        client.now = lambda: NOW_DT + timedelta(minutes=7)
        self.assertIsInstance(run(client, sim)[-1], Finished)
        self.assertTrue(client.clock_set)
        self.assertEqual(client.sets_done, ["40000200"])
        self.assertEqual(sim.children["000000000001"].clock_offset, 420.0)
        self.assertIn("proxy set 000000000001 40000200", sim.log)

    def test_set_then_get_reads_the_attribute_back(self) -> None:
        sim = terminal_with("000000000001")
        client = through(ProxyRead("000000000001", items=(), set_clock=True,
                                   read_after=((CLOCK, 0),)))
        self.assertIsInstance(run(client, sim)[-1], Finished)
        ((who, result),) = client.read_back
        self.assertEqual((who, result.oad), ("000000000001", CLOCK))
        assert result.data is not None
        self.assertEqual(result.data.tag, DataType.DATE_TIME_S)

    def test_a_set_the_meter_refuses_fails_naming_its_dar(self) -> None:
        sim = terminal_with("000000000001")
        client = through(ProxyRead("000000000001", items=(), sets=((OAD(0x4001, 2),
                                                                     FIVE),)))
        failed = run(client, sim)[-1]
        assert isinstance(failed, Failed)
        self.assertIsInstance(failed.error, ActionRefused)
        self.assertIn("DAR 3 (read/write refused)", str(failed.error))
        client = through(ProxyRead("000000000002", items=(), set_clock=True))
        failed = run(client, sim)[-1]
        assert isinstance(failed, Failed)
        self.assertIn("DAR 33 (request timed out)", str(failed.error))

    def test_action_then_get_reads_the_relay_after_a_trip(self) -> None:
        sim = terminal_with("000000000001")
        client = through(ProxyRead("000000000001", items=(), actions=(
            (TRIP, Data.array([Data.structure((Data(DataType.OAD, RELAY),
                                               integer(DataType.UNSIGNED, 0),
                                               integer(DataType.LONG_UNSIGNED, 0),
                                               Data(DataType.BOOL, False)))]),),),
            read_after=((RELAY, 0),)))
        self.assertIsInstance(run(client, sim)[-1], Finished)
        self.assertEqual(sim.children["000000000001"].relay, "open")
        ((_, result),) = client.read_back
        assert result.data is not None
        self.assertEqual(result.data.items[1], integer(DataType.ENUM, 1))

    def test_transparent_forwarding_of_a_dlt645_read(self) -> None:
        from fep.protocols.dlt645 import frames as f645
        from fep.sim.dlt645 import SimulatedDlt645Meter

        m645 = SimulatedDlt645Meter(address="000000000645", clock=lambda: NOW)

        def rs485(data: bytes) -> bytes | None:
            answer = m645.answer(f645.decode_frame(data))
            return answer.encode() if answer is not None else None

        sim = terminal_with()
        sim.ports[PORT] = rs485
        request = f645.Frame("000000000645", f645.control_code(0x11),
                             bytes.fromhex("00000100")).encode(preamble=4)
        forward = ProxyTransparent(PORT, COMDCB(3, 2, 8, 1, 0), 10, 500, request)
        silent = attrs.evolve(forward, port=OAD(0xF201, 2, 2))
        client = through(transparent=(forward, silent))
        actions = run(client, sim)
        self.assertIsInstance(actions[-1], Finished)
        (port, answer, dar), (port2, none, dar2) = client.forwarded
        self.assertEqual((port, dar), ("F2010201", None))
        assert answer is not None
        reply = f645.decode_frame(answer)
        self.assertTrue(reply.is_response)
        self.assertEqual(reply.address, "000000000645")
        self.assertEqual((port2, none, dar2), ("F2010202", None, 33))
        self.assertIn(Skipped("PROXY forwarding on port F2010202", "DAR 33 (request timed "
                                                                     "out)"), actions)


class RelayStateTests(unittest.TestCase):
    def test_the_relay_state_of_what_is_read_back(self) -> None:
        from fep.protocols.dlt698.control import relay_state

        def unit(state: int) -> Data:
            return Data.structure((Data(DataType.VISIBLE_STRING, "relay 1"),
                                   integer(DataType.ENUM, state), integer(DataType.ENUM, 1),
                                   integer(DataType.ENUM, 0)))

        self.assertEqual(relay_state(ResultNormal(RELAY, data=unit(1))), "open")
        self.assertEqual(relay_state(ResultNormal(RELAY, data=unit(0))), "closed")
        # The whole attribute (an array of one relay) reads the same.
        self.assertEqual(relay_state(ResultNormal(OAD(0xF205, 2),
                                                  data=Data.array([unit(1)]))), "open")
        self.assertEqual(relay_state(ResultNormal(RELAY, dar=4)),
                         "unknown (DAR 4 (object undefined))")
        self.assertEqual(relay_state(ResultNormal(RELAY, data=FIVE)),
                         "unknown (long_unsigned value)")


class ForwardLinkTests(unittest.TestCase):
    """fep.protocols.dlt698.forward against the simulated terminal, bytes alone."""

    def exchange(self, sim: SimulatedDlt698Meter, data: bytes) -> bytes:
        from fep.protocols.dlt698.frames import FrameDecoder

        return b"".join(a.encode() for f in FrameDecoder().receive(data) for a in sim.answer(f))

    def test_association_forwarding_a_silent_port_and_a_heartbeat(self) -> None:
        from fep.protocols.dlt698.forward import (
            Answer,
            ForwardLink,
            ForwardSettings,
            Ready,
            Refused,
            Reply,
        )

        sim = terminal_with()
        sim.ports[PORT] = lambda data: b"\x68" + data[::-1]
        link = ForwardLink(ForwardSettings("000000009999", PORT, 9600))
        first = link.start()
        assert first is not None
        self.assertEqual(link.receive(self.exchange(sim, first)), [Ready()])
        answer = self.exchange(sim, link.wrap(b"\x01\x02"))
        self.assertEqual(link.receive(answer), [Answer(b"\x68\x02\x01")])
        # 9600 bit/s (code 6), even parity, 8 data bits, 1 stop bit, no flow control.
        self.assertEqual(link.settings.comdcb, COMDCB(6, 2, 8, 1, 0))
        self.assertIn("proxy forward F2010201 0102", sim.log)
        silent = ForwardLink(ForwardSettings("000000009999", OAD(0xF201, 2, 2), connect=False))
        self.assertIsNone(silent.start())
        (refused,) = silent.receive(self.exchange(sim, silent.wrap(b"\x01")))
        self.assertEqual(refused, Refused("terminal 000000009999: port F2010202: DAR 33 "
                                          "(request timed out)"))
        (reply,) = link.receive(sim.login())
        self.assertIsInstance(reply, Reply)
        self.assertEqual(link.receive(b"\x68\x00garbage"), [])
        with self.assertRaises(ValueError):
            ForwardSettings("000000009999", PORT, 1234)

    def test_an_answer_behind_a_bad_frame_in_the_same_bytes_is_taken_at_once(self) -> None:
        # The terminal's login, a damaged frame, then the port's answer in one chunk: the
        # answer behind the damage is handed out now, not when the terminal sends again.
        from fep.protocols.dlt698.forward import Answer, ForwardLink, ForwardSettings, Reply

        sim = terminal_with()
        sim.ports[PORT] = lambda data: b"\x68" + data[::-1]
        link = ForwardLink(ForwardSettings("000000009999", PORT, 9600))
        first = link.start()
        assert first is not None
        link.receive(self.exchange(sim, first))
        answer = self.exchange(sim, link.wrap(b"\x01\x02"))
        damaged = bytearray(answer)
        damaged[-2] ^= 0x01
        actions = link.receive(sim.login() + bytes(damaged) + answer)
        self.assertEqual([type(a) for a in actions], [Reply, Answer])
        self.assertEqual(actions[-1], Answer(b"\x68\x02\x01"))
        self.assertGreaterEqual(link.noise, 1)

    def test_a_refused_connect(self) -> None:
        from fep.protocols.dlt698.forward import ForwardLink, ForwardSettings, Refused

        sim = terminal_with()
        sim.password = "secret"
        link = ForwardLink(ForwardSettings("000000009999", PORT, password="wrong"))
        first = link.start()
        assert first is not None
        self.assertEqual(link.receive(self.exchange(sim, first)),
                         [Refused("terminal 000000009999: CONNECT refused (result 1)")])
