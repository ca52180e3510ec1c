"""Memory is bounded by the file: a crafted file (CRC-32s fixed to match) whose payload headers
or index claim images far larger than what is stored is refused with an h5store error before
anything of the claimed size is allocated (issue 22 item 3)."""

import struct
import zlib

import h5py
import numpy as np
import pytest
from conftest import h5store_cli, run_python
from hypothesis import given, settings
from hypothesis import strategies as st

import h5store
from h5store import format as fmt
from h5store.codecs import ImageInfo, get_codec
from h5store.errors import DamagedImageError

IMAGE = np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 3
RGB = np.stack([IMAGE, IMAGE.T, 255 - IMAGE], axis=-1)
# Far below what any of the claims would take (11.8 GiB, 27.9 GiB, 30 GB).
PEAK_BOUND_MB = 300


def _store(path, codec, images=(RGB, RGB)):
    with h5store.open(path, "w", codec=codec) as store:
        return store.add_batch(list(images), labels=["a"] * len(images)).tolist()


def _rows(path):
    with h5py.File(path, "r", locking=False) as f:
        return f[fmt.INDEX][()]  # a closed store's rows are all in /index


def _put_rows(path, rows):
    with h5py.File(path, "r+", locking=False) as f:
        f[fmt.INDEX][...] = rows


def _edit_payload(path, image_id, edit):
    """Change the stored payload of one image in place and record its new CRC-32, as an
    attacker would: the damage is invisible to the checksum."""
    rows = _rows(path)
    k = int(np.flatnonzero(rows["id"] == image_id)[0])
    offset, nbytes = int(rows["offset"][k]), int(rows["nbytes"][k])
    with open(path, "r+b") as fh:
        fh.seek(offset)
        payload = bytearray(fh.read(nbytes))
        edit(payload)
        assert len(payload) == nbytes
        fh.seek(offset)
        fh.write(payload)
    rows["crc32"][k] = fmt.crc32(bytes(payload))
    _put_rows(path, rows)


def _jpeg_claims(side):
    def edit(payload):
        sof = payload.find(b"\xff\xc0")
        struct.pack_into(">HH", payload, sof + 5, side, side)

    return edit


def _png_claims(side):
    def edit(payload):
        struct.pack_into(">II", payload, 16, side, side)
        struct.pack_into(">I", payload, 29, zlib.crc32(bytes(payload[12:29])))  # IHDR's CRC

    return edit


# Each read the store offers, in a fresh interpreter under an address-space limit (so a
# regression fails with MemoryError instead of taking the machine's memory), reporting how
# far the peak resident size grew.
_READS = """
import resource, sys
import numpy as np
import h5store
from h5store.errors import DamagedImageError
path, image_id = sys.argv[1], int(sys.argv[2])
shape = tuple(map(int, sys.argv[3].split(","))) if len(sys.argv) > 3 else None
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
with h5store.open(path) as store:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = []
    reads = [lambda: store[image_id], lambda: store.get_batch([image_id])]
    if shape:  # (a caller's out array of the shape the index claims is the caller's memory)
        reads.append(lambda: store.get_batch([image_id], out=np.empty((1, *shape), np.uint8)))
    for read in reads:
        try:
            read()
            outcomes.append("read")
        except DamagedImageError as exc:
            outcomes.append(f"damaged {exc.image_id}")
    damaged = store.verify().damaged
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(outcomes, damaged, grew // 1024)
"""


def _read_in_child(path, image_id, shape=None):
    """(what each read raised, what verify() called damaged, MB the peak grew by)"""
    shape_arg = [",".join(map(str, shape))] if shape else []
    done = run_python(_READS, str(path), str(image_id), *shape_arg)
    assert done.returncode == 0, done.stderr
    outcomes, rest = done.stdout.strip().split("] ", 1)
    damaged, grew_mb = rest.rsplit(" ", 1)
    return outcomes + "]", damaged, int(grew_mb)


@pytest.mark.parametrize(
    ("codec", "claim"),
    [("jpeg", _jpeg_claims(65000)), ("png", _png_claims(100_000))],
    ids=["jpeg-65000x65000", "png-100000x100000"],
)
def test_a_payload_header_claiming_a_huge_image_is_refused_before_allocating(
    tmp_path, codec, claim
):
    path = tmp_path / f"{codec}.h5"
    first, _ = _store(path, codec)
    _edit_payload(path, first, claim)
    outcomes, damaged, grew_mb = _read_in_child(path, first, RGB.shape)
    assert outcomes == f"['damaged {first}', 'damaged {first}', 'damaged {first}']"
    assert damaged == f"[{first}]"  # verify() compares the header with the index
    assert grew_mb < PEAK_BOUND_MB


def test_the_header_message_names_both_geometries(tmp_path):
    path = tmp_path / "jpeg.h5"
    first, second = _store(path, "jpeg")
    _edit_payload(path, first, _jpeg_claims(65000))
    with h5store.open(path) as store:
        with pytest.raises(DamagedImageError, match=r"65000x65000x3 uint8.*32x32x3 uint8") as e:
            store[first]
        assert e.value.image_id == first and f"image {first}" in str(e.value)
        assert store[second].shape == RGB.shape  # the other image is unaffected


def _claim_geometry(path, height, width):
    """Make /stacks and every index row say the images are ``height`` x ``width`` (the stack
    dataset renamed to match), a consistent index for payloads of another size."""
    with h5py.File(path, "r+", locking=False) as f:
        table = f[fmt.STACKS][()]
        old = fmt.stack_path("a", 32, 32, 3, "uint8")
        table["height"][0], table["width"][0] = height, width
        f[fmt.STACKS][...] = table
        f.move(old, fmt.stack_path("a", height, width, 3, "uint8"))
    rows = _rows(path)
    rows["height"], rows["width"] = height, width
    _put_rows(path, rows)


@pytest.mark.parametrize("codec", ["jpeg", "png", "raw", "zstd", "lz4", "deflate", "blosc2"])
def test_an_index_claiming_100000_square_for_a_32_px_image_is_damage(tmp_path, codec):
    """The payload is intact and says 32 x 32; /stacks and the index say 100000 x 100000
    (30 GB): every read refuses it without allocating the claim, and verify() lists it."""
    path = tmp_path / f"{codec}.h5"
    first, second = _store(path, codec)
    _claim_geometry(path, 100_000, 100_000)
    outcomes, damaged, grew_mb = _read_in_child(path, first)
    assert outcomes == f"['damaged {first}', 'damaged {first}']"
    assert damaged == f"[{first}, {second}]"
    assert grew_mb < PEAK_BOUND_MB


#: Codecs whose payload geometry is read from the header before decoding; AVIF and JPEG XL
#: are decoded, then checked.
HEADER_READ = ["raw", "zstd", "lz4", "deflate", "blosc2", "png", "jpeg", "qoi", "webp", "jpegls"]
HEADER_READ += ["jpeg2k", "htj2k"]


@pytest.mark.parametrize("codec", [*HEADER_READ, "avif", "jpegxl"])
def test_the_codec_refuses_a_payload_of_another_geometry_before_decoding(codec):
    """The codec layer alone: the read path's decoder of a stack refuses a payload whose
    header (or recorded size) disagrees with the stack, and decodes a matching one."""
    c = get_codec(codec)
    payload = c.encode(RGB)
    out = c.decoder(RGB.shape, RGB.dtype)(memoryview(payload))
    assert out.shape == RGB.shape and (not c.lossless or np.array_equal(out, RGB))
    assert c.header_problem(payload, ImageInfo(32, 32, 3, RGB.dtype)) is None
    huge = c.header_problem(memoryview(payload), ImageInfo(100_000, 100_000, 3, RGB.dtype))
    assert (huge is not None) == (codec in HEADER_READ)
    for shape in [(100_000, 100_000, 3), (32, 33, 3), (64, 32, 3)]:
        with pytest.raises(DamagedImageError, match="damaged"):
            c.decoder(shape, RGB.dtype)(payload)
        with pytest.raises(DamagedImageError, match="damaged"):
            c.decoder(shape, RGB.dtype)(payload, np.empty(shape[:1] and (1, 1, 3), np.uint8))


# --------------------------------------------------------------------------- claimed sizes


@pytest.fixture
def small_store(store_path):
    with h5store.open(store_path, "w", codec="png", labels=["a", "b"]) as store:
        store.add_batch(
            np.zeros((4, 8, 8), np.uint8),
            labels=["a", "b", "a", "b"],
            scores=np.full((4, 2), 0.5, np.float32),
            sources=["w", "x", "y", "z"],
        )
    return store_path


def _resize(path, name, rows):
    with h5py.File(path, "r+", locking=False) as f:
        f[name].resize(rows, axis=0)


@pytest.mark.parametrize("name", [fmt.INDEX, fmt.LABELS, fmt.STACKS])
def test_a_table_resized_past_what_the_file_holds_is_refused_at_open(small_store, name):
    _resize(small_store, name, 10**12)
    with pytest.raises(h5store.FormatError, match=rf"/{name} is damaged: its shape \(10+,\)"):
        h5store.open(small_store)


@pytest.mark.parametrize(
    ("name", "read"),
    [
        (fmt.SCORES, lambda store: store.scores),
        (fmt.SCORES, lambda store: store.record(0)),
        (fmt.SOURCES, lambda store: store.sources),
        (fmt.SOURCE_CRC32, lambda store: store.record(0)),
    ],
)
def test_an_aligned_column_resized_past_what_the_file_holds_is_refused(small_store, name, read):
    _resize(small_store, name, 10**12)
    with h5store.open(small_store) as store:
        with pytest.raises(h5store.FormatError, match=rf"/{name} is damaged: its shape"):
            read(store)


def test_h5store_info_on_an_index_of_10_12_rows_exits_2_without_traceback(small_store):
    _resize(small_store, fmt.INDEX, 10**12)
    done = h5store_cli("info", small_store, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    assert "/index is damaged" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "dtype", ["S300000000", h5py.string_dtype()], ids=["300MB-fixed", "variable-length"]
)
def test_labels_longer_than_the_format_allows_are_refused_before_they_are_read(small_store, dtype):
    with h5py.File(small_store, "r+", locking=False) as f:
        del f[fmt.LABELS]
        if dtype == "S300000000":  # compressed, so the file stays small: its fill is zeros
            f.create_dataset(fmt.LABELS, shape=(2,), dtype=dtype, chunks=(1,), compression="gzip")
        else:
            f.create_dataset(fmt.LABELS, data=["a" * 10**6, "b"], dtype=dtype)
    with pytest.raises(h5store.FormatError, match="labels of at most 255 bytes"):
        h5store.open(small_store)


@settings(max_examples=60, deadline=None)
@given(
    codec=st.sampled_from([*HEADER_READ, "avif", "jpegxl"]),
    height=st.integers(1, 2**17),
    width=st.integers(1, 2**17),
    channels=st.sampled_from([1, 3, 4]),
    dtype=st.sampled_from(["uint8", "uint16"]),
    flips=st.lists(st.tuples(st.integers(0, 63), st.integers(1, 255)), max_size=3),
)
def test_a_decoder_returns_its_stacks_geometry_or_refuses(
    codec, height, width, channels, dtype, flips
):
    """Whatever geometry a stack claims and whatever its payload's first bytes say (a valid
    32 x 32 payload, with up to three bytes of its header changed where the codec reads the
    header before decoding), the stack's decoder returns
    an image of the stack's shape and dtype or raises DamagedImageError: no other exception,
    and no allocation of a claimed 2^17 x 2^17 image (the test would run out of memory)."""
    c = get_codec(codec)
    payload = bytearray(c.encode(RGB))
    if codec in HEADER_READ:  # (AVIF and JPEG XL decoders size their output by the stream)
        for at, delta in flips:
            payload[at % len(payload)] ^= delta
    shape = (height, width) if channels == 1 else (height, width, channels)
    try:
        image = c.decoder(shape, np.dtype(dtype))(memoryview(payload))
    except DamagedImageError:
        return
    assert image.shape == shape and image.dtype == np.dtype(dtype)
