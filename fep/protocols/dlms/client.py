"""The DLMS/COSEM client (the head end's side of an association), sans-IO: APDUs in, events
and APDUs out, above whichever link (HDLC or wrapper) carries them.

One request is outstanding at a time. Each method returns the APDU to send; ``receive``
takes the meter's APDU and returns ``Send`` when the exchange needs another APDU (the next
GET block, the HLS reply, the next SET block), or the exchange's result. Ciphering (security
suite 0, glo-ciphering) is applied here when the association is ciphered.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence

import attrs

from fep.errors import FrameError
from fep.protocols.dlms import acse, apdu, axdr, security
from fep.protocols.dlms.apdu import (
    AccessSelection,
    ActionRequest,
    ActionResponse,
    AttributeDescriptor,
    ConfirmedServiceErrorApdu,
    DataNotification,
    EventNotification,
    ExceptionResponseApdu,
    GeneralBlockTransfer,
    GetRequest,
    GetRequestNext,
    GetRequestWithList,
    GetResponse,
    GetResponseBlock,
    GetResponseWithList,
    GetResult,
    MethodDescriptor,
    SetRequest,
    SetRequestBlock,
    SetRequestFirstBlock,
    SetResponse,
    SetResponseBlock,
    SetResponseLastBlock,
)
from fep.protocols.dlms.axdr import Data
from fep.protocols.dlms.cosem import ASSOCIATION_REPLY_TO_HLS, CURRENT_ASSOCIATION, CosemClass
from fep.protocols.dlms.errors import (
    AssociationRefused,
    CipheringError,
    ConfirmedServiceError,
    DlmsError,
    DowngradeError,
    ExceptionResponse,
    ReplayError,
)


class Authentication(enum.Enum):
    NONE = "none"
    LOW = "low"
    HIGH_GMAC = "high-gmac"


_MECHANISMS = {
    Authentication.NONE: None,
    Authentication.LOW: acse.Mechanism.LLS,
    Authentication.HIGH_GMAC: acse.Mechanism.HLS_GMAC,
}

PROPOSED_CONFORMANCE = (
    acse.Conformance.GET
    | acse.Conformance.SET
    | acse.Conformance.ACTION
    | acse.Conformance.SELECTIVE_ACCESS
    | acse.Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | acse.Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | acse.Conformance.MULTIPLE_REFERENCES
    | acse.Conformance.DATA_NOTIFICATION
    | acse.Conformance.EVENT_NOTIFICATION
    | acse.Conformance.GENERAL_BLOCK_TRANSFER
)


# A year of 15-minute load profile with a dozen columns is about 2 MB of A-XDR.
MAX_REASSEMBLED = 16 * 1024 * 1024


@attrs.frozen
class ClientSettings:
    """How to associate with one meter. Keys and password never appear in repr."""

    authentication: Authentication = Authentication.NONE
    password: bytes | None = attrs.field(default=None, repr=False)
    # The client's system title (8 bytes); needed for ciphering and HLS-GMAC.
    system_title: bytes = b"FEP\x00\x00\x00\x00\x01"
    keys: security.SecurityKeys | None = attrs.field(default=None, repr=False)
    # Cipher the xDLMS APDUs (authenticated and encrypted) when keys are given.
    ciphered: bool = False
    max_receive_pdu_size: int = 0xFFFF
    conformance: int = PROPOSED_CONFORMANCE
    meter: str | None = None
    route: str | None = None
    # Ceiling of a long answer reassembled from GET blocks or general block transfer: a
    # meter (or whoever answers for it) cannot make the head end buffer without end.
    max_reassembled: int = MAX_REASSEMBLED


@attrs.frozen
class Send:
    """The exchange goes on: send this APDU."""

    apdu: bytes


@attrs.frozen
class Associated:
    server_system_title: bytes | None
    conformance: int
    max_pdu_size: int


@attrs.frozen
class GetDone:
    results: tuple[GetResult, ...]


@attrs.frozen
class SetDone:
    results: tuple[int, ...]


@attrs.frozen
class ActionDone:
    result: int
    value: Data | None


@attrs.frozen
class Released:
    pass


@attrs.frozen
class Pushed:
    """An unsolicited notification arrived on the association's connection (a meter that
    pushes while a pull session runs over the same socket). ``notification`` is None when
    it could not be taken; ``problem`` says why (no keys, bad tag, replayed counter)."""

    notification: DataNotification | EventNotification | None
    problem: str | None = None
    system_title: bytes | None = None
    invocation_counter: int | None = None
    # An unciphered notification from a meter with keys: refused, a security event.
    downgrade: bool = False


Event = Send | Associated | GetDone | SetDone | ActionDone | Released | Pushed


# Unsolicited APDUs a meter may send at any time, plain, and the general-ciphering tags.
PUSH_TAGS = frozenset({apdu.Tag.DATA_NOTIFICATION, apdu.Tag.EVENT_NOTIFICATION})
GENERAL_CIPHERING = frozenset({security.GENERAL_GLO_CIPHERING, security.GENERAL_DED_CIPHERING})


class State(enum.Enum):
    IDLE = "idle"
    AARQ_SENT = "aarq sent"
    HLS_PENDING = "hls pending"
    ASSOCIATED = "associated"
    RELEASING = "releasing"
    RELEASED = "released"


class DlmsClient:
    """One association with one meter's logical device."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        invocation_counter: int = 1,
        counter_limit: int = 0x100000000,
        challenge: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.state = State.IDLE
        self.server_system_title: bytes | None = None
        self.conformance = 0
        self.max_pdu_size = 0xFFFF
        self._counter = invocation_counter
        # Counters at or above this are not ours (reserved for a later session).
        self._counter_limit = counter_limit
        self._challenge = challenge or os.urandom(16)
        self._stoc: bytes | None = None
        self._last_received: int | None = None
        # The outstanding exchange.
        self._pending: str | None = None
        self._blocks = bytearray()
        self._block_number = 0
        self._with_list = False
        self._set_blocks: list[bytes] = []
        self._gbt = bytearray()
        self._gbt_number = 0
        if settings.authentication == Authentication.LOW and not settings.password:
            raise DlmsError("low-level authentication needs a password", meter=settings.meter)
        if (settings.ciphered or settings.authentication == Authentication.HIGH_GMAC) and (
            settings.keys is None
        ):
            raise DlmsError(
                "ciphering and HLS-GMAC need the meter's keys (--ek/--ak)", meter=settings.meter
            )

    # -- counters -----------------------------------------------------------------------------

    @property
    def invocation_counter(self) -> int:
        """The next invocation counter this client will use (persist it)."""
        return self._counter

    def _next_counter(self) -> int:
        counter = self._counter
        if counter > 0xFFFFFFFF:
            raise CipheringError(
                "invocation counter exhausted: the meter needs new keys", meter=self.settings.meter
            )
        if counter >= self._counter_limit:
            raise CipheringError(
                "the invocation counters reserved for this session are used up",
                meter=self.settings.meter,
            )
        self._counter += 1
        return counter

    def _error(
        self, cls: type[DlmsError], message: str, cosem_object: str | None = None
    ) -> DlmsError:
        return cls(
            message, meter=self.settings.meter, route=self.settings.route, cosem_object=cosem_object
        )

    # -- ciphering ----------------------------------------------------------------------------

    def _control(self) -> security.SecurityControl:
        return security.SecurityControl(suite=0, authenticated=True, encrypted=True)

    def _wrap(self, plain: bytes) -> bytes:
        if not self.settings.ciphered:
            return plain
        assert self.settings.keys is not None
        return security.cipher_apdu(
            plain,
            system_title=self.settings.system_title,
            invocation_counter=self._next_counter(),
            keys=self.settings.keys,
            control=self._control(),
        )

    def _unwrap(self, data: bytes) -> bytes:
        tag = data[0] if data else -1
        if not self.settings.ciphered or tag in (0x60, 0x61, 0x62, 0x63):
            return data
        if tag == apdu.Tag.EXCEPTION_RESPONSE or tag == apdu.Tag.CONFIRMED_SERVICE_ERROR:
            return data
        if tag == apdu.Tag.GENERAL_BLOCK_TRANSFER:
            return data  # its reassembled content is unwrapped (and checked) in turn
        if not security.is_ciphered(tag):
            raise self._error(
                DowngradeError, f"unciphered APDU {tag:#04x} on a ciphered association"
            )
        assert self.settings.keys is not None
        try:
            deciphered = security.decipher_apdu(
                data, keys=self.settings.keys, system_title=self.server_system_title
            )
        except CipheringError as e:
            raise self._error(CipheringError, str(e)) from None
        if self._last_received is not None and deciphered.invocation_counter <= self._last_received:
            raise self._error(
                ReplayError,
                f"invocation counter {deciphered.invocation_counter} not above "
                f"{self._last_received}",
            )
        self._last_received = deciphered.invocation_counter
        return deciphered.plain_apdu

    # -- association --------------------------------------------------------------------------

    def associate(self) -> bytes:
        """The AARQ."""
        if self.state != State.IDLE:
            raise self._error(DlmsError, f"associate in state {self.state.value}")
        s = self.settings
        initiate = acse.InitiateRequest(
            conformance=acse.Conformance(s.conformance),
            max_receive_pdu_size=s.max_receive_pdu_size,
        )
        user_information = initiate.encode()
        if s.ciphered:
            assert s.keys is not None
            user_information = security.cipher_apdu(
                user_information,
                system_title=s.system_title,
                invocation_counter=self._next_counter(),
                keys=s.keys,
                control=self._control(),
            )
        mechanism = _MECHANISMS[s.authentication]
        value: bytes | None = None
        if s.authentication == Authentication.LOW:
            value = s.password
        elif s.authentication == Authentication.HIGH_GMAC:
            value = self._challenge
        context = acse.ApplicationContext.LN_CIPHERING if s.ciphered else acse.ApplicationContext.LN
        aarq = acse.Aarq(
            application_context=context,
            mechanism=mechanism,
            calling_ap_title=s.system_title
            if (s.ciphered or s.authentication == Authentication.HIGH_GMAC)
            else None,
            authentication_value=value,
            user_information=user_information,
        )
        self.state = State.AARQ_SENT
        return acse.encode_aarq(aarq)

    def _on_aare(self, data: bytes) -> Event:
        decoded = acse.decode_acse(data)
        if not isinstance(decoded, acse.Aare):
            raise self._error(DlmsError, f"expected an AARE, got {type(decoded).__name__}")
        if decoded.responding_ap_title:
            self.server_system_title = decoded.responding_ap_title
        if decoded.result != 0:
            try:
                acse.check_aare(decoded, meter=self.settings.meter)
            except AssociationRefused as refused:
                refused.route = self.settings.route
                self.state = State.IDLE
                raise
        user = decoded.user_information or b""
        if user and self.settings.ciphered and user[0] == 0x08:  # InitiateResponse
            # An association the AARQ asked ciphered is answered ciphered, or not at all.
            raise self._error(
                DowngradeError, "unciphered InitiateResponse to a ciphered association request"
            )
        if user and self.settings.ciphered:
            user = self._unwrap(user)
        if user and user[0] == apdu.Tag.CONFIRMED_SERVICE_ERROR:
            raise self._error(ConfirmedServiceError, f"initiate refused: {_describe_cse(user)}")
        if not user:
            raise self._error(DlmsError, "AARE without an InitiateResponse")
        response = acse.InitiateResponse.decode(user)
        self.conformance = int(response.conformance)
        self.max_pdu_size = response.max_receive_pdu_size or 0xFFFF
        if self.settings.authentication == Authentication.HIGH_GMAC:
            stoc = decoded.authentication_value
            if not stoc or not self.server_system_title:
                raise self._error(
                    DlmsError, "HLS-GMAC: the AARE carries no challenge or system title"
                )
            self._stoc = stoc
            assert self.settings.keys is not None
            reply = security.gmac_tag(
                0x10,
                self.settings.system_title,
                self._next_counter(),
                self.settings.keys,
                stoc,
            )
            self.state = State.HLS_PENDING
            self._pending = "hls"
            request = ActionRequest(
                MethodDescriptor(
                    CosemClass.ASSOCIATION_LN, CURRENT_ASSOCIATION, ASSOCIATION_REPLY_TO_HLS
                ),
                axdr.octet_string(reply),
            )
            return Send(self._wrap(apdu.encode_apdu(request)))
        self.state = State.ASSOCIATED
        return Associated(self.server_system_title, self.conformance, self.max_pdu_size)

    def _on_hls_reply(self, response: ActionResponse) -> Event:
        if (
            response.result != 0
            or response.return_value is None
            or response.return_value.data is None
        ):
            raise self._error(
                DlmsError,
                f"HLS-GMAC: the meter refused our reply ({apdu.result_name(response.result)})",
            )
        tag = axdr.as_bytes(response.return_value.data, "f(CtoS)")
        assert self.settings.keys is not None and self.server_system_title is not None
        if not security.verify_gmac(
            self.server_system_title, self.settings.keys, self._challenge, tag
        ):
            raise self._error(CipheringError, "HLS-GMAC: the meter's f(CtoS) does not verify")
        self.state = State.ASSOCIATED
        self._pending = None
        return Associated(self.server_system_title, self.conformance, self.max_pdu_size)

    def release(self) -> bytes:
        """The RLRQ."""
        self.state = State.RELEASING
        return acse.encode_rlrq(acse.Rlrq(reason=0))

    # -- services -----------------------------------------------------------------------------

    def _check_ready(self) -> None:
        if self.state != State.ASSOCIATED:
            raise self._error(DlmsError, f"not associated ({self.state.value})")
        if self._pending is not None:
            raise self._error(DlmsError, f"a {self._pending} is still outstanding")

    def get(self, attribute: AttributeDescriptor, access: AccessSelection | None = None) -> bytes:
        self._check_ready()
        self._pending, self._with_list = "get", False
        self._blocks.clear()
        self._block_number = 0
        return self._wrap(apdu.encode_apdu(GetRequest(attribute, access)))

    def get_with_list(
        self, attributes: Sequence[tuple[AttributeDescriptor, AccessSelection | None]]
    ) -> bytes:
        self._check_ready()
        self._pending, self._with_list = "get", True
        self._blocks.clear()
        self._block_number = 0
        return self._wrap(apdu.encode_apdu(GetRequestWithList(tuple(attributes))))

    def set(self, attribute: AttributeDescriptor, value: Data) -> bytes:
        self._check_ready()
        self._pending = "set"
        raw = axdr.encode(value)
        room = max(self.max_pdu_size - 32, 16)
        if len(raw) + 24 <= self.max_pdu_size:
            return self._wrap(apdu.encode_apdu(SetRequest(attribute, value)))
        chunks = [raw[i : i + room] for i in range(0, len(raw), room)]
        self._set_blocks = chunks[1:]
        self._block_number = 1
        return self._wrap(
            apdu.encode_apdu(SetRequestFirstBlock(attribute, len(chunks) == 1, 1, chunks[0]))
        )

    def action(self, method: MethodDescriptor, parameters: Data | None = None) -> bytes:
        self._check_ready()
        self._pending = "action"
        return self._wrap(apdu.encode_apdu(ActionRequest(method, parameters)))

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes) -> Event:
        """The meter's APDU; raises DlmsError subclasses (meter named) or FrameError. An
        unsolicited notification is a ``Pushed`` event whatever the state of the exchange."""
        if not data:
            raise FrameError("empty APDU", offset=0, field="tag")
        if data[0] in PUSH_TAGS:
            if self.settings.keys is not None:
                return Pushed(None, f"unciphered notification {data[0]:#04x} from a meter "
                              "with keys", downgrade=True)
            return self._plain_push(data)
        if data[0] in GENERAL_CIPHERING and not (
            self.settings.ciphered and self.state in (State.HLS_PENDING, State.ASSOCIATED)
        ):
            return self._general_push(data)
        if self.state == State.AARQ_SENT:
            if data[0] == 0x61:
                return self._on_aare(data)
            if data[0] in (apdu.Tag.EXCEPTION_RESPONSE, apdu.Tag.CONFIRMED_SERVICE_ERROR):
                self._raise_error_apdu(apdu.decode_apdu(data))
            raise FrameError(f"expected an AARE, got tag {data[0]:#04x}", offset=0, field="tag")
        if self.state == State.RELEASING:
            if data[0] == 0x63:
                self.state = State.RELEASED
                return Released()
            if data[0] == apdu.Tag.EXCEPTION_RESPONSE:
                self.state = State.RELEASED
                return Released()
        plain = self._unwrap(data)
        message = apdu.decode_apdu(plain)
        if isinstance(message, GeneralBlockTransfer):
            return self._on_gbt(message)
        return self._dispatch(message)

    def _plain_push(self, data: bytes) -> Pushed:
        try:
            message = apdu.decode_apdu(data)
        except FrameError as e:
            return Pushed(None, f"malformed notification: {e}")
        if not isinstance(message, (DataNotification, EventNotification)):
            return Pushed(None, f"unexpected {type(message).__name__}")
        return Pushed(message)

    def _general_push(self, data: bytes) -> Pushed:
        """A general-ciphered APDU outside a ciphered association: only a push can be one;
        deciphered with the meter's keys when it has them."""
        keys = self.settings.keys
        try:
            title = security.general_system_title(data)
        except FrameError as e:
            return Pushed(None, f"malformed general-ciphered APDU: {e}")
        if keys is None:
            return Pushed(None, "ciphered push, but no keys for this meter", title)
        try:
            deciphered = security.decipher_apdu(data, keys=keys)
        except CipheringError as e:
            return Pushed(None, str(e), title)
        counter = deciphered.invocation_counter
        if self._last_received is not None and counter <= self._last_received:
            return Pushed(
                None,
                f"invocation counter {counter} not above {self._last_received}",
                title,
                counter,
            )
        self._last_received = counter
        try:
            message = apdu.decode_apdu(deciphered.plain_apdu)
        except FrameError as e:
            return Pushed(None, str(e), title, counter)
        if not isinstance(message, (DataNotification, EventNotification)):
            return Pushed(None, f"ciphered {type(message).__name__} outside an association",
                          title, counter)
        return Pushed(message, None, title, counter)

    def _grown_over(self, buffered: bytearray, more: bytes, what: str) -> None:
        """FrameError (the reassembly dropped) when ``more`` takes ``buffered`` over the
        ceiling."""
        if len(buffered) + len(more) > self.settings.max_reassembled:
            buffered.clear()
            self._pending = None
            raise FrameError(
                f"{what} grows over {self.settings.max_reassembled} bytes", field="block-transfer"
            )

    def _on_gbt(self, block: GeneralBlockTransfer) -> Event:
        self._grown_over(self._gbt, block.data, "general block transfer")
        self._gbt += block.data
        self._gbt_number = block.block_number
        if not block.last:
            ack = GeneralBlockTransfer(False, 1, block.block_number, b"", window=1)
            return Send(apdu.encode_apdu(ack))
        whole = bytes(self._gbt)
        self._gbt.clear()
        return self._dispatch(apdu.decode_apdu(self._unwrap(whole)))

    def _raise_error_apdu(self, message: apdu.Apdu) -> None:
        self._pending = None
        if isinstance(message, ExceptionResponseApdu):
            raise self._error(ExceptionResponse, f"exception response: {message.describe()}")
        if isinstance(message, ConfirmedServiceErrorApdu):
            raise self._error(
                ConfirmedServiceError, f"confirmed service error: {message.describe()}"
            )

    def _dispatch(self, message: apdu.Apdu) -> Event:
        if isinstance(message, (DataNotification, EventNotification)):
            return Pushed(message)
        if isinstance(message, (ExceptionResponseApdu, ConfirmedServiceErrorApdu)):
            self._raise_error_apdu(message)
        if self._pending == "hls" and isinstance(message, ActionResponse):
            return self._on_hls_reply(message)
        if self._pending == "get":
            if isinstance(message, GetResponse):
                self._pending = None
                return GetDone((message.result,))
            if isinstance(message, GetResponseWithList):
                self._pending = None
                return GetDone(message.results)
            if isinstance(message, GetResponseBlock):
                return self._on_get_block(message)
        if self._pending == "set":
            if isinstance(message, SetResponse):
                self._pending = None
                return SetDone((message.result,))
            if isinstance(message, SetResponseBlock):
                if not self._set_blocks:
                    raise FrameError("meter acknowledged a SET block we did not send", field="set")
                chunk = self._set_blocks.pop(0)
                self._block_number += 1
                return Send(
                    self._wrap(
                        apdu.encode_apdu(
                            SetRequestBlock(not self._set_blocks, self._block_number, chunk)
                        )
                    )
                )
            if isinstance(message, SetResponseLastBlock):
                self._pending = None
                return SetDone((message.result,))
        if self._pending == "action" and isinstance(message, ActionResponse):
            self._pending = None
            value = message.return_value
            if value is not None and value.error is not None:
                return ActionDone(value.error, None)
            return ActionDone(message.result, value.data if value else None)
        raise FrameError(
            f"unexpected {type(message).__name__} (waiting for {self._pending or 'nothing'})",
            field="apdu",
        )

    def _on_get_block(self, block: GetResponseBlock) -> Event:
        if block.raw is None:
            self._pending = None
            return GetDone((GetResult(error=block.error),))
        if block.block_number != self._block_number + 1:
            raise FrameError(
                f"GET block {block.block_number} after block {self._block_number}",
                field="block-number",
            )
        self._block_number = block.block_number
        self._grown_over(self._blocks, block.raw, "GET with blocks")
        self._blocks += block.raw
        if not block.last:
            return Send(self._wrap(apdu.encode_apdu(GetRequestNext(block.block_number))))
        self._pending = None
        raw = bytes(self._blocks)
        self._blocks.clear()
        if not self._with_list:
            return GetDone((GetResult(data=axdr.decode_all(raw)),))
        # A long GET-with-list: the blocks carry the count and Get-Data-Results.
        return GetDone(apdu.decode_get_results(raw))


def _describe_cse(user: bytes) -> str:
    message = apdu.decode_apdu(user)
    if isinstance(message, ConfirmedServiceErrorApdu):
        return message.describe()
    return "confirmed service error"
