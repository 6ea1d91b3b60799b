"""The shared libraries an ELF file asks the dynamic loader for (its DT_NEEDED entries).

Read from the file's bytes, never loaded: asking which TensorRT a provider library was linked
against must not dlopen it (that fails, or crashes, exactly when the answer matters). Only what
the loader itself uses is read: the ELF header, the program headers, the PT_DYNAMIC segment and
the string table it points at (through the PT_LOAD segment that maps it), so stripped files work.
"""

from __future__ import annotations

import struct
from pathlib import Path

_MAGIC = b"\x7fELF"
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ = 0, 1, 5, 10


class ElfError(ValueError):
    """The file is not an ELF shared object this reader understands."""


def needed_libraries(path: Path) -> list[str]:
    """DT_NEEDED names of the ELF file at `path`, in the order the file lists them."""
    data = path.read_bytes()
    if data[:4] != _MAGIC or len(data) < 64:
        raise ElfError(f"{path.name} is not an ELF file")
    wide = {1: False, 2: True}.get(data[4])  # EI_CLASS: 32- or 64-bit
    order = {1: "<", 2: ">"}.get(data[5])  # EI_DATA: little- or big-endian
    if wide is None or order is None:
        raise ElfError(f"{path.name}: unknown ELF class or byte order")
    segments = _program_headers(data, order, wide)
    dynamic = next((s for s in segments if s[0] == _PT_DYNAMIC), None)
    if dynamic is None:
        return []  # statically linked: needs nothing
    entries = _dynamic_entries(data, order, wide, dynamic[1], dynamic[3])
    strtab = next((v for tag, v in entries if tag == _DT_STRTAB), None)
    if strtab is None:
        raise ElfError(f"{path.name}: dynamic section has no string table")
    table = _file_offset(segments, strtab, path)
    size = next((v for tag, v in entries if tag == _DT_STRSZ), len(data) - table)
    strings = data[table : table + size]
    return [_string_at(strings, value, path) for tag, value in entries if tag == _DT_NEEDED]


# (p_type, p_offset, p_vaddr, p_filesz)
_Segment = tuple[int, int, int, int]


def _program_headers(data: bytes, order: str, wide: bool) -> list[_Segment]:
    if wide:
        phoff, phentsize, phnum = struct.unpack_from(order + "32xQ14xHH", data, 0)
    else:
        phoff, phentsize, phnum = struct.unpack_from(order + "28xI10xHH", data, 0)
    segments = []
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + phentsize > len(data):
            raise ElfError("program headers run past the end of the file")
        if wide:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
            p_type, _, offset, vaddr, _, filesz = struct.unpack_from(order + "IIQQQQ", data, at)
        else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz
            p_type, offset, vaddr, _, filesz = struct.unpack_from(order + "IIIII", data, at)
        segments.append((p_type, offset, vaddr, filesz))
    return segments


def _dynamic_entries(data: bytes, order: str, wide: bool, offset: int, size: int) -> list[tuple[int, int]]:
    fmt = order + ("qQ" if wide else "iI")
    step = struct.calcsize(fmt)
    entries = []
    for at in range(offset, min(offset + size, len(data)) - step + 1, step):
        tag, value = struct.unpack_from(fmt, data, at)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _file_offset(segments: list[_Segment], address: int, path: Path) -> int:
    """The file offset of a virtual address, through the PT_LOAD segment that maps it."""
    for p_type, offset, vaddr, filesz in segments:
        if p_type == _PT_LOAD and vaddr <= address < vaddr + filesz:
            return address - vaddr + offset
    raise ElfError(f"{path.name}: no loaded segment maps address {address:#x}")


def _string_at(strings: bytes, index: int, path: Path) -> str:
    end = strings.find(b"\0", index)
    if index >= len(strings) or end < 0:
        raise ElfError(f"{path.name}: string index {index} outside the string table")
    return strings[index:end].decode("utf-8", "replace")
