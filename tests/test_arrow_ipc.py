"""Decompression bombs: an Arrow message's decoded size is known before decoding."""
import time

import pyarrow as pa
import pytest

from sabot.arrow_ipc import decoded_size
from sabot.codecs import ArrowCodec, DEFAULT_MAX_DECODED_BYTES, decode_many, get_codec
from sabot.exceptions import DecodeError


def ipc(batch, compression=None):
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


BATCH = pa.record_batch({"i": pa.array(range(1000), pa.int64()),
                         "s": pa.array([str(i) for i in range(1000)]),
                         "d": pa.array(["a", "b"] * 500).dictionary_encode()})


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_decoded_size_is_what_the_buffers_take(compression):
    size = decoded_size(ipc(BATCH, compression))
    assert BATCH.nbytes <= size <= BATCH.nbytes + 64 * 8  # padding of the buffers


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_a_compressed_message_within_the_limit_decodes(compression):
    assert get_codec("arrow").decode(ipc(BATCH, compression)).equals(BATCH)


def test_a_decompression_bomb_is_refused_before_it_is_decompressed():
    # 20 strings of 10 MiB of zeros: a few kilobytes that ask for 200 MiB.
    bomb = ipc(pa.record_batch({"s": pa.array(["\0" * (10 << 20)] * 20)}), "zstd")
    assert len(bomb) < 16_000
    before = pa.total_allocated_bytes()
    started = time.perf_counter()
    codec = ArrowCodec(max_decoded_bytes=100 << 20)
    with pytest.raises(DecodeError, match="max_decoded_bytes"):
        codec.decode(bomb)
    assert time.perf_counter() - started < 1.0
    assert pa.total_allocated_bytes() - before < 1 << 20  # nothing was inflated
    # Through the transports' path it is a dead letter like any bad value.
    values, failures = decode_many(codec, [bomb, ipc(BATCH)])
    assert [i for i, _ in failures] == [0] and values[0].equals(BATCH)


def test_the_default_limit_and_a_codec_of_ones_own():
    assert get_codec("arrow").max_decoded_bytes == DEFAULT_MAX_DECODED_BYTES == 256 << 20
    small = ArrowCodec(max_decoded_bytes=1000)
    with pytest.raises(DecodeError, match="max_decoded_bytes"):
        small.decode(ipc(BATCH))


@pytest.mark.parametrize("cut", [3, 7, 40, 200])
def test_truncated_metadata_is_a_decode_error(cut):
    with pytest.raises(DecodeError):
        decoded_size(ipc(BATCH, "zstd")[:cut])
