"""The DLMS/COSEM server (a meter's logical device), sans-IO: takes the client's APDUs and
answers them from a COSEM object model. The simulator serves it; it follows the same rules
as the client (association, suite-0 ciphering, HLS-GMAC, long GET in blocks).
"""

from __future__ import annotations

import os
from typing import Protocol

import attrs

from fep.errors import FrameError
from fep.protocols.dlms import acse, apdu, axdr, security
from fep.protocols.dlms.apdu import (
    AccessSelection,
    ActionRequest,
    ActionResponse,
    AttributeDescriptor,
    DataAccessResult,
    DataNotification,
    ExceptionResponseApdu,
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
    SetRequestWithList,
    SetResponse,
    SetResponseBlock,
    SetResponseLastBlock,
    SetResponseWithList,
)
from fep.protocols.dlms.axdr import Data
from fep.protocols.dlms.cosem import ASSOCIATION_REPLY_TO_HLS, CURRENT_ASSOCIATION, CosemClass
from fep.protocols.dlms.errors import CipheringError

SUPPORTED_CONFORMANCE = (
    acse.Conformance.GET
    | acse.Conformance.SET
    | acse.Conformance.ACTION
    | acse.Conformance.SELECTIVE_ACCESS
    | acse.Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | acse.Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | acse.Conformance.MULTIPLE_REFERENCES
    | acse.Conformance.DATA_NOTIFICATION
)


class CosemModel(Protocol):
    """A meter's objects as the server sees them."""

    def get(self, attribute: AttributeDescriptor, access: AccessSelection | None) -> Data | int:
        """The value, or a Data-Access-Result code."""

    def set(self, attribute: AttributeDescriptor, value: Data) -> int:
        """A Data-Access-Result code."""

    def action(self, method: MethodDescriptor, parameters: Data | None) -> tuple[int, Data | None]:
        """(Action-Result, return parameters)."""


@attrs.frozen
class ServerSettings:
    """What the meter accepts. Secrets stay out of repr."""

    system_title: bytes = b"FEPSIM\x00\x01"
    password: bytes | None = attrs.field(default=None, repr=False)
    keys: security.SecurityKeys | None = attrs.field(default=None, repr=False)
    # The lowest mechanism accepted; "none" allows unauthenticated (public client) access.
    allow_lowest: bool = True
    max_pdu_size: int = 1024


class DlmsServer:
    """One association at a time, as a meter's management logical device does."""

    def __init__(
        self,
        model: CosemModel,
        settings: ServerSettings,
        *,
        invocation_counter: int = 1,
        received_counters: dict[bytes, int] | None = None,
        seen_counters: list[tuple[bytes, int]] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.associated = False
        self.ciphered = False
        self.client_system_title: bytes | None = None
        self.client_max_pdu = 0xFFFF
        self.conformance = 0
        self.invocation_counter = invocation_counter
        # Last invocation counter accepted per client system title; shared between the
        # associations of one meter, as a real meter keeps it across associations.
        self.received_counters = received_counters if received_counters is not None else {}
        # Every (client system title, invocation counter) a ciphered APDU came with, in
        # order, when a list is given (tests: that no nonce ever repeats).
        self.seen_counters = seen_counters
        self._hls_pending = False
        self._ctos: bytes | None = None
        self._stoc = b""
        self._get_blocks: list[bytes] = []
        self._get_block_number = 0
        self._get_invoke = 0
        self._set_attribute: AttributeDescriptor | None = None
        self._set_raw = bytearray()
        # Counts for tests and the simulator's status line.
        self.errors: list[str] = []

    # -- ciphering ----------------------------------------------------------------------------

    def _next_counter(self) -> int:
        counter = self.invocation_counter
        self.invocation_counter += 1
        return counter

    def _control(self) -> security.SecurityControl:
        return security.SecurityControl(suite=0, authenticated=True, encrypted=True)

    def _wrap(self, plain: bytes) -> bytes:
        if not self.ciphered:
            return plain
        return self._cipher(plain, general=False)

    def _cipher(self, plain: bytes, *, general: bool) -> bytes:
        assert self.settings.keys is not None
        return security.cipher_apdu(
            plain,
            system_title=self.settings.system_title,
            invocation_counter=self._next_counter(),
            keys=self.settings.keys,
            control=self._control(),
            general=general,
        )

    def _unwrap(self, data: bytes) -> bytes:
        assert self.settings.keys is not None
        deciphered = security.decipher_apdu(
            data, keys=self.settings.keys, system_title=self.client_system_title
        )
        title = deciphered.system_title
        if self.seen_counters is not None:
            self.seen_counters.append((title, deciphered.invocation_counter))
        last = self.received_counters.get(title)
        if last is not None and deciphered.invocation_counter <= last:
            raise CipheringError(
                f"replayed invocation counter {deciphered.invocation_counter} (last {last})"
            )
        self.received_counters[title] = deciphered.invocation_counter
        return deciphered.plain_apdu

    def push(self, body: Data, date_time: axdr.CosemDateTime | None = None) -> bytes:
        """A Data-Notification of ``body``; general-glo-ciphered when the meter has keys, so
        the receiver learns the system title from the APDU."""
        plain = apdu.encode_apdu(DataNotification(body, date_time, 0))
        if self.settings.keys is None:
            return plain
        return self._cipher(plain, general=True)

    # -- entry point --------------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes | None:
        """The answer to one client APDU (None when there is nothing to answer)."""
        if not data:
            return None
        tag = data[0]
        try:
            if tag == 0x60:
                return self._on_aarq(data)
            if tag == 0x62:
                self._reset()
                return acse.encode_rlre(acse.Rlre(reason=0))
            if not self.associated and not self._hls_pending:
                return apdu.encode_apdu(ExceptionResponseApdu(1, 1))
            plain = data
            if self.ciphered:
                if apdu.is_plain_service(tag):
                    self.errors.append("unciphered request on a ciphered association")
                    return apdu.encode_apdu(ExceptionResponseApdu(1, 5))
                plain = self._unwrap(data)
            request = apdu.decode_apdu(plain)
        except CipheringError as e:
            self.errors.append(str(e))
            return apdu.encode_apdu(ExceptionResponseApdu(2, 5))
        except FrameError as e:
            self.errors.append(str(e))
            return apdu.encode_apdu(ExceptionResponseApdu(2, 3))
        response = self._serve(request)
        return None if response is None else self._wrap(response)

    def _reset(self) -> None:
        self.associated = False
        self.ciphered = False
        self._hls_pending = False
        self._get_blocks = []

    # -- association --------------------------------------------------------------------------

    def _aare(
        self,
        aarq: acse.Aarq,
        result: int,
        diagnostic: int,
        user: bytes | None,
        mechanism: acse.Mechanism | None = None,
        stoc: bytes | None = None,
    ) -> bytes:
        return acse.encode_aare(
            acse.Aare(
                application_context=aarq.application_context,
                result=result,
                diagnostic_source="user",
                diagnostic=diagnostic,
                responding_ap_title=self.settings.system_title
                if (self.ciphered or mechanism == acse.Mechanism.HLS_GMAC)
                else None,
                mechanism=mechanism,
                authentication_value=stoc,
                user_information=user,
            )
        )

    def _on_aarq(self, data: bytes) -> bytes:
        self._reset()
        decoded = acse.decode_acse(data)
        if not isinstance(decoded, acse.Aarq):
            raise FrameError("expected an AARQ", field="tag")
        aarq = decoded
        context = aarq.application_context
        ciphered = context == acse.ApplicationContext.LN_CIPHERING
        if context not in (acse.ApplicationContext.LN, acse.ApplicationContext.LN_CIPHERING) or (
            ciphered and self.settings.keys is None
        ):
            return self._aare(aarq, 1, 2, None)  # application-context-name-not-supported
        self.client_system_title = aarq.calling_ap_title
        self.ciphered = ciphered
        user = aarq.user_information or b""
        try:
            if ciphered:
                if not self.client_system_title:
                    self.ciphered = False
                    return self._aare(aarq, 1, 3, None)  # calling AP title not recognised
                user = self._unwrap(user)
            initiate = acse.InitiateRequest.decode(user)
        except (CipheringError, FrameError) as e:
            self.errors.append(f"AARQ: {e}")
            self.ciphered = False
            return self._aare(aarq, 1, 1, None)
        mechanism = aarq.mechanism
        stoc: bytes | None = None
        if mechanism is None or mechanism == acse.Mechanism.LOWEST:
            if not self.settings.allow_lowest:
                self.ciphered = False
                return self._aare(aarq, 1, 14, None, mechanism)  # authentication-required
        elif mechanism == acse.Mechanism.LLS:
            if (
                self.settings.password is None
                or aarq.authentication_value != self.settings.password
            ):
                self.errors.append("LLS: wrong password")
                self.ciphered = False
                return self._aare(aarq, 1, 13, None, mechanism)  # authentication-failure
        elif mechanism == acse.Mechanism.HLS_GMAC:
            if (
                self.settings.keys is None
                or not aarq.calling_ap_title
                or not aarq.authentication_value
            ):
                self.ciphered = False
                return self._aare(aarq, 1, 13, None, mechanism)
            self._ctos = aarq.authentication_value
            stoc = os.urandom(16)
            self._stoc = stoc
        else:
            self.ciphered = False
            return self._aare(aarq, 1, 11, None, mechanism)  # mechanism not recognised
        self.conformance = int(initiate.conformance) & int(SUPPORTED_CONFORMANCE)
        self.client_max_pdu = initiate.max_receive_pdu_size or 0xFFFF
        response = acse.InitiateResponse(
            conformance=acse.Conformance(self.conformance),
            max_receive_pdu_size=self.settings.max_pdu_size,
        ).encode()
        if self.ciphered:
            response = self._wrap(response)
        if stoc is not None:
            self._hls_pending = True
        else:
            self.associated = True
        return self._aare(aarq, 0, 0, response, mechanism, stoc)

    # -- services -----------------------------------------------------------------------------

    def _serve(self, request: apdu.Apdu) -> bytes | None:
        if self._hls_pending:
            if (
                isinstance(request, ActionRequest)
                and request.method.class_id == CosemClass.ASSOCIATION_LN
                and request.method.instance == CURRENT_ASSOCIATION
                and request.method.method == ASSOCIATION_REPLY_TO_HLS
            ):
                return self._on_hls(request)
            return apdu.encode_apdu(ExceptionResponseApdu(1, 1))
        if isinstance(request, GetRequest):
            return self._get(request)
        if isinstance(request, GetRequestNext):
            return self._get_next(request)
        if isinstance(request, GetRequestWithList):
            results = tuple(self._get_result(a, s) for a, s in request.attributes)
            return self._long(
                GetResponseWithList(results, request.invoke), request.invoke, with_list=results
            )
        if isinstance(request, SetRequest):
            return apdu.encode_apdu(
                SetResponse(self.model.set(request.attribute, request.value), request.invoke)
            )
        if isinstance(request, SetRequestFirstBlock):
            self._set_attribute = request.attribute
            self._set_raw = bytearray(request.raw)
            return self._set_block(request.last, request.block_number, request.invoke)
        if isinstance(request, SetRequestBlock):
            if self._set_attribute is None:
                return apdu.encode_apdu(
                    SetResponse(DataAccessResult.NO_LONG_SET_IN_PROGRESS, request.invoke)
                )
            self._set_raw += request.raw
            return self._set_block(request.last, request.block_number, request.invoke)
        if isinstance(request, SetRequestWithList):
            codes = tuple(
                self.model.set(a, v)
                for (a, _), v in zip(request.attributes, request.values, strict=False)
            )
            return apdu.encode_apdu(SetResponseWithList(codes, request.invoke))
        if isinstance(request, ActionRequest):
            result, value = self.model.action(request.method, request.parameters)
            return apdu.encode_apdu(
                ActionResponse(
                    result, GetResult(data=value) if value is not None else None, request.invoke
                )
            )
        return apdu.encode_apdu(ExceptionResponseApdu(2, 2))  # service-unknown

    def _on_hls(self, request: ActionRequest) -> bytes:
        assert self.settings.keys is not None
        tag = request.parameters.value if request.parameters is not None else b""
        if (self.seen_counters is not None and isinstance(tag, bytes) and len(tag) >= 5
                and self.client_system_title is not None):
            self.seen_counters.append((self.client_system_title, int.from_bytes(tag[1:5], "big")))
        if (
            not isinstance(tag, bytes)
            or self.client_system_title is None
            or not security.verify_gmac(
                self.client_system_title, self.settings.keys, self._stoc, tag
            )
        ):
            self.errors.append("HLS-GMAC: f(StoC) does not verify")
            self._hls_pending = False
            return apdu.encode_apdu(
                ActionResponse(DataAccessResult.READ_WRITE_DENIED, None, request.invoke)
            )
        assert self._ctos is not None
        reply = security.gmac_tag(
            0x10, self.settings.system_title, self._next_counter(), self.settings.keys, self._ctos
        )
        self._hls_pending = False
        self.associated = True
        return apdu.encode_apdu(
            ActionResponse(0, GetResult(data=axdr.octet_string(reply)), request.invoke)
        )

    def _set_block(self, last: bool, number: int, invoke: int) -> bytes:
        if not last:
            return apdu.encode_apdu(SetResponseBlock(number, invoke))
        attribute = self._set_attribute
        assert attribute is not None
        self._set_attribute = None
        try:
            value = axdr.decode_all(bytes(self._set_raw))
        except FrameError:
            return apdu.encode_apdu(
                SetResponseLastBlock(DataAccessResult.TYPE_UNMATCHED, number, invoke)
            )
        return apdu.encode_apdu(
            SetResponseLastBlock(self.model.set(attribute, value), number, invoke)
        )

    def _get_result(
        self, attribute: AttributeDescriptor, access: AccessSelection | None
    ) -> GetResult:
        value = self.model.get(attribute, access)
        if isinstance(value, Data):
            return GetResult(data=value)
        return GetResult(error=value)

    def _get(self, request: GetRequest) -> bytes:
        result = self._get_result(request.attribute, request.access)
        return self._long(GetResponse(result, request.invoke), request.invoke, single=result)

    def _long(
        self,
        response: apdu.Apdu,
        invoke: int,
        *,
        single: GetResult | None = None,
        with_list: tuple[GetResult, ...] | None = None,
    ) -> bytes:
        """The response, or its first block when it exceeds the client's PDU size."""
        encoded = apdu.encode_apdu(response)
        limit = min(self.client_max_pdu, self.settings.max_pdu_size)
        overhead = 40 if self.ciphered else 0
        if len(encoded) + overhead <= limit:
            return encoded
        if single is not None:
            if single.data is None:
                return encoded
            raw = axdr.encode(single.data)
        else:
            assert with_list is not None
            # the count and the Get-Data-Results, after tag, choice and invoke id
            raw = apdu.encode_apdu(GetResponseWithList(with_list, invoke))[3:]
        room = max(limit - 16 - overhead, 16)
        self._get_blocks = [raw[i : i + room] for i in range(0, len(raw), room)]
        self._get_block_number = 0
        self._get_invoke = invoke
        return self._next_block(invoke)

    def _next_block(self, invoke: int) -> bytes:
        chunk = self._get_blocks.pop(0)
        self._get_block_number += 1
        return apdu.encode_apdu(
            GetResponseBlock(not self._get_blocks, self._get_block_number, raw=chunk, invoke=invoke)
        )

    def _get_next(self, request: GetRequestNext) -> bytes:
        if not self._get_blocks:
            return apdu.encode_apdu(
                GetResponseBlock(
                    True,
                    request.block_number,
                    error=DataAccessResult.NO_LONG_GET_IN_PROGRESS,
                    invoke=request.invoke,
                )
            )
        if request.block_number != self._get_block_number:
            self._get_blocks = []
            return apdu.encode_apdu(
                GetResponseBlock(
                    True,
                    request.block_number,
                    error=DataAccessResult.DATA_BLOCK_NUMBER_INVALID,
                    invoke=request.invoke,
                )
            )
        return self._next_block(request.invoke)
