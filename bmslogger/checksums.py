"""Checksums several device protocols share, as small table-driven functions.

Kept in the core so that two plugins speaking protocols with the same CRC (REC's RS-485
frames use CRC-16/ARC; Modbus RTU uses the same reflected polynomial with another start
value) do not each carry a copy. Pure functions: bytes in, integer out.
"""

from __future__ import annotations


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


#: CRC-16 with polynomial 0x8005 processed bit-reflected (0xA001); entry 1 is 0xC0C1.
_TABLE_A001 = _reflected_table(0xA001)


def _crc16_a001(data: bytes, crc: int) -> int:
    table = _TABLE_A001
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_arc(data: bytes, crc: int = 0x0000) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0, no final XOR; check("123456789") =
    0xBB3D). `crc` continues a running value, so a CRC can be fed in pieces."""
    return _crc16_a001(data, crc)


def crc16_modbus(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/MODBUS (the same polynomial, init 0xFFFF; check("123456789") = 0x4B37).
    Sent low byte first in Modbus RTU frames."""
    return _crc16_a001(data, crc)


# --- the ASCII-hex frame family (PACE, Pylontech, Seplos: YD/T 1363.3 style) ---------------


def ydt1363_chksum(text: bytes) -> int:
    """Frame checksum of the ASCII-hex battery protocols (PACE VER 0x25, Pylontech and
    Seplos VER 0x20): the two's complement of the sum of the ASCII codes between SOI and
    CHKSUM, kept to 16 bits. The PACE documents' example: body ``1203400356ABCEFE`` sums to
    0x038E, so the checksum is 0xFC72."""
    return -sum(text) & 0xFFFF


def ydt1363_lchksum(lenid: int) -> int:
    """The 4-bit LCHKSUM of the same family's LENGTH field: the two's complement of the sum
    of LENID's three nibbles, modulo 16 (so a nibble sum that is a multiple of 16 gives 0,
    not 16). LENID 0x002 gives 0xE; 0x04C gives 0x0."""
    if not 0 <= lenid <= 0xFFF:
        raise ValueError(f"LENID is 12 bits, got {lenid!r}")
    return -((lenid >> 8) + (lenid >> 4 & 0xF) + (lenid & 0xF)) & 0xF
