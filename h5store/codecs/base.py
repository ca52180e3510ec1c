"""The one interface every image codec implements.

Modelled on numcodecs' ``Codec`` (``codec_id``, ``encode``, ``decode``, ``get_config``,
``from_config``) with what an image store and HDF5 also need: which dtypes and channel counts
the codec can hold, whether it is lossless, the MIME type of its stream, and the registered HDF5
filter (id and ``cd_values``) whose decoder reads the stored chunk as it is. And what the
edges of the package ask of a stream, so that none of them looks a codec up by its id: the
file extension export writes a payload under, and the metadata a payload can carry inside it.

A codec instance is immutable configuration plus pure functions; it is shared between threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..errors import CodecError, DamagedImageError

#: Quality is one scale for every lossy codec; each codec maps it onto its own knobs.
QUALITY_RANGE = (1, 100)


class ImageInfo(NamedTuple):
    """What a pre-encoded stream says about the image inside it (a tuple: probing runs once
    per pre-encoded image on the ingest path)."""

    height: int
    width: int
    channels: int
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return image_shape(self.height, self.width, self.channels)


@dataclass(frozen=True)
class HDF5Filter:
    """The HDF5 filter a stack declares so that plain HDF5 tools can decode its chunks."""

    filter_id: int
    cd_values: tuple[int, ...] = ()
    #: True when a standard HDF5 filter with this id decodes the payload exactly (viewers can show
    #: the pixels); False for h5store's placeholder id on codecs nobody registered.
    registered: bool = True


def image_shape(height: int, width: int, channels: int) -> tuple[int, ...]:
    """Array shape of one image: grayscale is 2-D, everything else (H, W, C)."""
    return (height, width) if channels == 1 else (height, width, channels)


def check_quality(quality: Any) -> int:
    low, high = QUALITY_RANGE
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise CodecError(f"quality must be an integer in [{low}, {high}], got {quality!r}")
    if not low <= quality <= high:
        raise CodecError(f"quality must be in [{low}, {high}], got {quality}")
    return int(quality)


def check_level(level: Any, low: int, high: int, what: str = "level") -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise CodecError(f"{what} must be an integer in [{low}, {high}], got {level!r}")
    if not low <= level <= high:
        raise CodecError(f"{what} must be in [{low}, {high}], got {level}")
    return int(level)


def check_setting(
    value: Any, value_range: tuple[int, int, int] | None, what: str, codec_id: str
) -> int | None:
    """An optional integer setting (level, effort): the default when ``value`` is None, checked
    against ``value_range`` = (lowest, highest, default); refused by codecs without one."""
    if value_range is None:
        if value is not None:
            raise CodecError(f"codec {codec_id!r} has no {what} setting")
        return None
    low, high, default = value_range
    return check_level(default if value is None else value, low, high, what)


class Codec(ABC):
    """Encodes one image (H, W) or (H, W, C) to one chunk payload and back.

    Subclasses set the class attributes, take their parameters as keyword arguments in
    ``__init__`` (validating them there, so a bad setting fails before anything is written),
    and implement :meth:`encode`, :meth:`decode` and :meth:`get_config`.
    """

    #: Registry name, also stored in the file.
    codec_id: ClassVar[str]
    #: MIME type of one chunk payload (``application/octet-stream`` for non-image streams).
    mime_type: ClassVar[str] = "application/octet-stream"
    #: numpy dtype names the codec can hold. The class attribute is what some configuration of
    #: the codec holds; an instance whose configuration holds less (a lossy mode that only
    #: round-trips uint8) narrows it with an instance attribute of the same name.
    dtypes: ClassVar[frozenset[str]] = frozenset({"uint8"})
    #: Channel counts the codec can hold (1 = grayscale, 3 = RGB, 4 = RGBA).
    channels: ClassVar[frozenset[int]] = frozenset({1, 3})
    #: Whether the codec takes ``quality`` (lossy mode exists); lossless-only codecs ignore it.
    takes_quality: ClassVar[bool] = False
    #: Largest height or width the codec's stream can describe.
    max_side: ClassVar[int] = 2**31 - 1
    #: Settings the benchmark suite sweeps by default: constructor keyword arguments.
    bench_grid: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    #: Extension (with its dot) of a file that holds one payload as it is, for codecs whose
    #: payload is a complete file of some format (".jpg"); None for the others, whose images
    #: export writes as PNG.
    file_extension: ClassVar[str | None] = None
    #: Other extensions files of that format go by (".jpeg"), recognised in files read.
    other_extensions: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`embed_metadata` can put metadata inside a payload (EXIF, iTXt, ...).
    embeds_metadata: ClassVar[bool] = False

    @property
    @abstractmethod
    def lossless(self) -> bool:
        """True when decode(encode(x)) == x for every image the codec accepts."""

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes:
        """Encode one image into one chunk payload.

        Parameters
        ----------
        image
            A C-contiguous (H, W) or (H, W, C) array of a dtype in :attr:`dtypes` and a
            channel count in :attr:`channels` (checked before this is called).

        Returns
        -------
        bytes
            The payload: the codec's own stream, stored as one HDF5 chunk.

        Raises
        ------
        CodecError
            The image cannot be encoded with this configuration.
        """

    @abstractmethod
    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Decode one payload into an image.

        Parameters
        ----------
        data
            The payload, any bytes-like object (a memoryview of the mapped file).
        shape
            The image's shape in the index: (H, W) or (H, W, C).
        dtype
            The image's dtype in the index.

        Returns
        -------
        numpy.ndarray
            An array of ``shape`` and ``dtype``.

        Raises
        ------
        CodecError
            The payload is not a valid stream of this codec.
        """

    def header(self, data: Any) -> ImageInfo | None:
        """The geometry a stored payload's header declares, read from its first bytes without
        decoding anything (``data`` may be a memoryview); None where the stream declares none
        or this codec does not read it. CodecError if the header is unreadable."""
        return None

    def header_problem(self, data: Any, expected: ImageInfo) -> str | None:
        """Why a stored payload cannot hold an image of ``expected`` geometry, judged by its
        header alone (None: it can, as far as the header tells)."""
        try:
            declared = self.header(data)
        except Exception as exc:  # CodecError, or a parse running off a crafted header
            return f"its header is unreadable ({exc})"
        if declared is not None and declared != expected:
            return (
                f"its header declares a {describe_geometry(declared)} image, "
                f"not the stack's {describe_geometry(expected)}"
            )
        return None

    def header_checker(self, expected: ImageInfo) -> Callable[[Any], str | None]:
        """:meth:`header_problem` for the payloads of one stack, built once per stack (a codec
        whose streams repeat one header can remember a header it checked)."""
        header_problem = self.header_problem
        return lambda data: header_problem(data, expected)

    def decode_bounded(
        self, data: Any, shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None
    ) -> np.ndarray:
        """Decode one payload into an array of ``shape`` and ``dtype`` (``out`` when given),
        allocating no more than that whatever the stream declares: codecs whose decoder takes
        an output buffer override this; the default decodes then copies."""
        image = self.decode(data, shape, dtype)
        if out is None:
            return image
        if image.shape != out.shape or image.dtype != out.dtype:
            return image  # the caller's shape check reports it
        out[...] = image
        return out

    def decoder(self, shape: tuple[int, ...], dtype: np.dtype) -> Callable[..., np.ndarray]:
        """The read path's function ``decode(payload, out=None)`` for the images of one stack
        (built once per stack, called once per image). A payload whose header declares another
        geometry than the stack's is refused before anything is allocated for it; the rest
        decode into the stack's shape (into ``out``, a C-contiguous array of it, when given),
        never into what the stream declares, and what comes out is checked. Every refusal is a
        :class:`DamagedImageError`: the payload passed its CRC-32, so it was written (or
        crafted) that way."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        expected = geometry(shape, dtype)
        header_problem, decode_bounded = self.header_checker(expected), self.decode_bounded
        codec_id = self.codec_id

        def decode(data: Any, out: np.ndarray | None = None) -> np.ndarray:
            problem = header_problem(data)
            if problem is not None:
                raise damaged_payload(codec_id, problem)
            try:
                image = decode_bounded(data, shape, dtype, out)
            except DamagedImageError:
                raise
            except Exception as exc:  # CodecError, or the library's own on a crafted stream
                raise damaged_payload(codec_id, f"it does not decode ({exc})") from None
            if image.shape != shape or image.dtype != dtype:
                raise damaged_payload(
                    codec_id,
                    f"it decodes to a {image.shape} {image.dtype} image, "
                    f"not the stack's {shape} {dtype}",
                )
            return image

        return decode

    def decode_into(self, data: Any, out: np.ndarray) -> None:
        """Decode one payload into ``out`` (a C-contiguous array of the image's shape and
        dtype), checked as :meth:`decoder` checks it."""
        self.decoder(out.shape, out.dtype)(data, out)

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The codec's configuration, kept in the file with each class.

        Returns
        -------
        dict
            ``{"id": codec_id, **parameters}``, JSON-serialisable; ``from_config(config)``
            builds the same codec again (the parameters are the constructor's keywords).
        """

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        params = {k: v for k, v in config.items() if k != "id"}
        return cls(**params)

    def hdf5_filter(self, shape: tuple[int, ...], dtype: np.dtype) -> HDF5Filter | None:
        """Filter to declare on a stack of images of ``shape``; None means no filter at all
        (the payload is the raw array bytes)."""
        return HDF5Filter(OPAQUE_FILTER_ID, (), registered=False)

    def probe(self, data: bytes) -> ImageInfo:
        """Describe a pre-encoded stream (``add_encoded``), reading its header.

        Codecs whose streams do not carry the image geometry cannot take pre-encoded input
        (the default).

        Parameters
        ----------
        data
            The stream, e.g. a JPEG file's bytes.

        Returns
        -------
        ImageInfo
            The geometry the stream declares: height, width, channels, dtype.

        Raises
        ------
        CodecError
            ``data`` is not a valid stream of this codec, or the codec takes no pre-encoded
            input.
        """
        raise CodecError(f"codec {self.codec_id!r} cannot store pre-encoded bytes")

    def probe_many(self, payloads: Sequence[bytes]) -> list[ImageInfo]:
        """:meth:`probe` of each payload (a codec may share work between the streams of one
        batch); a CodecError names the position of the first bad stream."""
        infos = []
        for k, payload in enumerate(payloads):
            try:
                infos.append(self.probe(payload))
            except CodecError as exc:
                raise CodecError(f"encoded image {k}: {exc}") from None
        return infos

    def embed_metadata(
        self, data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
    ) -> bytes:
        """``data`` (a payload of this codec) with ``metadata`` (JSON-serialisable) inside it
        where the format's readers find it, the encoded image untouched; ``size`` is the
        image's (width, height). Codecs that set :attr:`embeds_metadata` implement it; the
        others raise CodecError."""
        raise CodecError(f"cannot embed metadata in {self.codec_id!r} files")

    def strip_metadata(self, data: bytes) -> bytes:
        """``data`` without what :meth:`embed_metadata` put in: the stored payload again.
        Payloads without it come back unchanged."""
        return data

    def check_image(self, height: int, width: int, channels: int, dtype: np.dtype) -> None:
        """Raise CodecError unless this codec can hold such an image."""
        name = np.dtype(dtype).name
        if name not in self.dtypes:
            raise CodecError(
                f"codec {self.codec_id!r} cannot hold {name} images "
                f"(it accepts {', '.join(sorted(self.dtypes))})"
            )
        if channels not in self.channels:
            raise CodecError(
                f"codec {self.codec_id!r} cannot hold {channels}-channel images "
                f"(it accepts {', '.join(map(str, sorted(self.channels)))} channels)"
            )
        if height > self.max_side or width > self.max_side:
            raise CodecError(
                f"codec {self.codec_id!r} holds images up to {self.max_side} px a side, "
                f"got {height}x{width}"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"{type(self).__name__}({params})"


def decoded_image(
    image: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, codec_id: str
) -> np.ndarray:
    """``image`` if it has the stack's shape and dtype; a payload that decodes to anything else
    is damaged or was stored under the wrong geometry."""
    if image.shape != tuple(shape) or image.dtype != np.dtype(dtype):
        raise CodecError(
            f"codec {codec_id!r}: the stored stream decodes to a "
            f"{image.shape} {image.dtype} image, "
            f"not the stack's {tuple(shape)} {np.dtype(dtype)}: the payload is damaged"
        )
    return image


def geometry(shape: tuple[int, ...], dtype: np.dtype) -> ImageInfo:
    """The ImageInfo of an array shape (H, W) or (H, W, C) and dtype."""
    return ImageInfo(shape[0], shape[1], 1 if len(shape) == 2 else shape[2], np.dtype(dtype))


def describe_geometry(info: ImageInfo) -> str:
    return f"{info.height}x{info.width}x{info.channels} {np.dtype(info.dtype).name}"


def damaged_payload(codec_id: str, problem: str) -> DamagedImageError:
    """The read path's refusal of a stored payload (the store names the image)."""
    return DamagedImageError(f"codec {codec_id!r}: the stored payload is damaged: {problem}")


def image_info(image: np.ndarray) -> ImageInfo:
    """What a decoded image says about itself (used to probe streams by decoding them)."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    return ImageInfo(image.shape[0], image.shape[1], channels, image.dtype)


#: Declared on stacks whose codec has no registered HDF5 filter. It lies in the range HDF5
#: leaves for private use, so no tool decodes such a chunk into wrong pixels: a viewer without
#: h5store reports the filter as unavailable, and the stack's attributes name the real codec.
OPAQUE_FILTER_ID = 47930
