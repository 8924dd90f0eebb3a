"""shared.jsoncodec.RpcPacket answers "does this payload hold bytes" exactly as python-socketio's
own packet does (issue 18: the stock test was a measurable share of every metadata call)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from socketio.packet import BINARY_EVENT, EVENT, Packet

from shared import jsoncodec
from shared.jsoncodec import RpcPacket

leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                   st.binary(max_size=3), st.builds(bytearray, st.binary(max_size=3)))
payloads = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4),
    st.tuples(inner, inner)), max_leaves=20)


@settings(max_examples=400)
@given(payloads)
def test_same_answer_as_the_stock_packet(data: object) -> None:
    assert RpcPacket.data_is_binary(data) == Packet.data_is_binary(data)


def test_binary_payloads_still_become_binary_events() -> None:
    assert RpcPacket(EVENT, data=["call", {"v": [1, b"\x00"]}]).packet_type == BINARY_EVENT
    pkt = RpcPacket(EVENT, data=["call", "get", {"rpcArgs": ["k", {}]}], namespace="/metadata", id=7)
    assert pkt.packet_type == EVENT
    assert pkt.encode() == '2/metadata,7["call","get",{"rpcArgs":["k",{}]}]'
    assert RpcPacket.json is not None and jsoncodec.RpcPacket is RpcPacket
