"""Firmware images by name: a ``firmware-upgrade`` command names an image file of the
configured firmware directory (``[collect] firmware_dir``, default ``DATA_DIR/firmware``),
never a path. The name is checked and the image hashed (SHA-256) when the command is
requested, the hash kept with the command; when its job runs the image is read again and
sent only if it still has that hash (a file swapped after the request or the approval is
refused).

What a caller may name: a plain file name of at most :data:`MAX_NAME` characters, letters,
digits and ``. _ + -``, not starting with a dot, without ``..``; the file must be a regular
file inside the directory (a symbolic link is followed only while it stays inside) of at
most :data:`MAX_IMAGE_BYTES` bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

from fep.errors import ConfigError

ACTION = "firmware-upgrade"
MAX_NAME = 128
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
RULE = (f"an image is named by its file name in the firmware directory ([collect] "
        f"firmware_dir): letters, digits, '.', '_', '+', '-', at most {MAX_NAME} characters, "
        "no '/', no leading '.', no '..'")


class ImageRefused(ConfigError):
    """A firmware image refused: not a plain name, missing, too big, or not the image whose
    hash was recorded with the command."""


def firmware_directory(data_dir: str | Path, setting: str) -> Path:
    """``[collect] firmware_dir``, or ``DATA_DIR/firmware`` when it is empty."""
    return Path(setting) if setting else Path(data_dir) / "firmware"


def checked_name(name: object, where: str) -> str:
    """``name`` if it is a plain image name (:data:`RULE`), else :class:`ImageRefused`."""
    if not isinstance(name, str) or not name:
        raise ImageRefused(f"{where}: needs image=NAME ({RULE})")
    shown = name if len(name) <= 2 * MAX_NAME else name[:2 * MAX_NAME] + "..."
    if len(name) > MAX_NAME or not _NAME.fullmatch(name) or ".." in name:
        raise ImageRefused(f"{where}: image {shown!r} refused: {RULE}")
    return name


def read_image(directory: Path | None, name: str, where: str) -> bytes:
    """The bytes of image ``name`` of ``directory`` (blocking: run it in a thread)."""
    name = checked_name(name, where)
    if directory is None:
        raise ImageRefused(f"{where}: image {name!r} refused: no firmware directory is "
                           "configured ([collect] firmware_dir)")
    try:
        home = directory.resolve(strict=True)
        path = (home / name).resolve(strict=True)
    except OSError:
        raise ImageRefused(f"{where}: image {name!r} refused: no such image in the firmware "
                           f"directory {directory}") from None
    if path.parent != home:
        raise ImageRefused(f"{where}: image {name!r} refused: it leads outside the firmware "
                           f"directory {directory}")
    if not path.is_file():  # a directory, a FIFO (whose open would block), a device
        raise ImageRefused(f"{where}: image {name!r} refused: not a regular file in the "
                           f"firmware directory {directory}")
    try:
        # O_NONBLOCK: a file swapped for a FIFO since the look above cannot hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ImageRefused(f"{where}: image {name!r} refused: not a regular file "
                                   f"in the firmware directory {directory}")
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise ImageRefused(f"{where}: image {name!r} cannot be read from the firmware "
                           f"directory {directory}: {e.strerror}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRefused(f"{where}: image {name!r} refused: larger than "
                           f"{MAX_IMAGE_BYTES} bytes")
    if not data:
        raise ImageRefused(f"{where}: image {name!r} refused: the file is empty")
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def requested_params(
    meter: str, params: Mapping[str, Any], directory: Path | None
) -> dict[str, Any]:
    """A firmware-upgrade request's ``params`` with the image checked and its hash and size
    recorded (``image_sha256``, ``image_size``). A caller that gives ``image_sha256`` must
    give the image's."""
    where = f"meter {meter}: {ACTION}"
    name = checked_name(params.get("image"), where)
    data = await deferToThread(read_image, directory, name, where)
    digest = sha256(data)
    expected = params.get("image_sha256")
    if expected is not None and str(expected).strip().lower() != digest:
        raise ImageRefused(f"{where}: image {name!r} has SHA-256 {digest}, not the "
                           f"{str(expected)[:80]!r} given")
    kept = {k: v for k, v in params.items() if k != "image_bytes"}  # the runner's, not a caller's
    return {**kept, "image": name, "image_sha256": digest, "image_size": len(data)}


async def image_for(
    meter: str, command: int, params: Mapping[str, Any], directory: Path | None
) -> bytes:
    """The image a firmware-upgrade command sends, read again when its job runs and refused
    unless its SHA-256 is the one recorded when the command was requested."""
    where = f"meter {meter}: command {command} {ACTION}"
    name = checked_name(params.get("image"), where)
    recorded = params.get("image_sha256")
    if not isinstance(recorded, str) or not _SHA256.fullmatch(recorded):
        raise ImageRefused(f"{where}: image {name!r} refused: no SHA-256 was recorded when "
                           "it was requested; request the command again")
    data = await deferToThread(read_image, directory, name, where)
    digest = sha256(data)
    if digest != recorded:
        raise ImageRefused(f"{where}: image {name!r} refused: its SHA-256 is now {digest}, "
                           f"not {recorded} as recorded when it was requested (the file "
                           "changed since)")
    return data
