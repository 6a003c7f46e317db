"""Signed meter values in both stores: written once however often a frame repeats (stable
ids, ``InsertIfAbsent``), a session's read oldest first in one batched call, and their
text kept exactly as sent, up to its bound."""

from __future__ import annotations

from datetime import timedelta

from domain.entities import MAX_SIGNED_DATA, SignedEncoding, SignedMeterValue
from domain.ports import InsertIfAbsent, Store
from domain.query import ALL, Eq, Sort
from domain.services.metering import MeterReading, SampledValue, signed_values_of
from tests.contract.factories import OCMF, T0, put, session, signed_value, station


def frame(data: str, *, seconds: int = 0, context: str = "Transaction.Begin"
          ) -> MeterReading:
    return MeterReading(T0 + timedelta(seconds=seconds), (
        SampledValue(value="1234", context=context),
        SampledValue(value=data, context=context, format="SignedData")))


async def test_a_repeated_frame_writes_its_signed_values_once(store: Store) -> None:
    cp = station()
    sess = session(cp)
    readings = [frame(OCMF), frame("AQIDBA==", seconds=60, context="Sample.Periodic")]
    for _ in range(2):  # the charger sent the frame again (no answer reached it)
        signed = signed_values_of(cp, 1, sess.transaction_id, sess, readings)
        await store.write([InsertIfAbsent(s) for s in signed], [])
    stored = await store.find_all(SignedMeterValue, Eq("session_id", sess.id), (Sort("at"),))
    assert [(s.encoding, s.context, s.data) for s in stored] == [
        (SignedEncoding.OCMF, "Transaction.Begin", OCMF),
        (SignedEncoding.UNKNOWN, "Sample.Periodic", "AQIDBA==")]
    assert all(s.station_id == cp.id and s.transaction_id == sess.transaction_id
               for s in stored)


async def test_two_signed_values_of_one_instant_are_both_kept(store: Store) -> None:
    """The text is part of the id: a signed register and a signed power at one time."""
    cp = station()
    sess = session(cp)
    readings = [MeterReading(T0, (
        SampledValue(value=OCMF, format="SignedData"),
        SampledValue(value=OCMF.replace("2935.6", "2935.7"), format="SignedData")))]
    await store.write([InsertIfAbsent(s) for s in
                       signed_values_of(cp, 1, sess.transaction_id, sess, readings)], [])
    assert await store.count(SignedMeterValue, Eq("session_id", sess.id)) == 2


async def test_text_beyond_the_bound_is_kept_cut_and_flagged(store: Store) -> None:
    cp = station()
    long_text = "OCMF|" + "é" * (MAX_SIGNED_DATA + 10)
    [signed] = signed_values_of(cp, 1, None, None, [frame(long_text)])
    await store.write([InsertIfAbsent(signed)], [])
    [stored] = await store.get_many(SignedMeterValue, [signed.id])
    assert stored is not None and stored.session_id is None
    assert stored.data == long_text[:MAX_SIGNED_DATA] and stored.truncated
    assert stored.data_length == len(long_text) and stored.encoding is SignedEncoding.OCMF


async def test_a_session_s_signed_values_are_grouped_oldest_first(store: Store) -> None:
    cp = station()
    first, second = session(cp), session(cp, 2)
    values = [signed_value(cp, first, at=T0 + timedelta(minutes=m), data=f"v{m}")
              for m in (30, 0, 10)]
    values.append(signed_value(cp, second, data="other"))
    await put(store, *values)
    grouped = await store.find_grouped(SignedMeterValue, "session_id",
                                       [first.id, second.id], ALL, (Sort("at"),), 2)
    assert [v.data for v in grouped[first.id]] == ["v0", "v10"]
    assert [v.data for v in grouped[second.id]] == ["other"]
    counted = await store.count_grouped(SignedMeterValue, "session_id",
                                        [first.id, second.id], ALL)
    assert counted == {first.id: 3, second.id: 1}
