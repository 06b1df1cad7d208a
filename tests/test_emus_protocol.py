"""The EMUS sentence codec on its own: CRC, builders, the incremental parser, decoders.

The worked examples of the protocol reference (§4: the BV1 request CRC step by step, the
vendor BC1 and BV2 examples, the catalogue check value) are reproduced exactly; the
parser is fed byte by byte, with garbage, broken CRCs and cut lines, and hypothesis throws
random bytes and random valid-but-shuffled sentence streams at it.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.errors import ChecksumError, FramingError, ProtocolError
from bmslogger.plugins.emus import protocol as p


def parse_all(data: bytes, **kw) -> list:
    parser = p.SentenceParser(**kw)
    return list(parser.events(data))


def sentences(events: list) -> list[p.Sentence]:
    return [e for e in events if isinstance(e, p.Sentence)]


# --- CRC (§4) ---------------------------------------------------------------------------------


def test_crc_catalogue_check_value():
    assert p.crc8(b"123456789") == 0xA1


def test_crc_worked_example_running_values():
    running = []
    crc = 0
    for byte in b"BV1,?,":
        crc = p.crc8(bytes((byte,)), crc)
        running.append(crc)
    assert running == [0xFA, 0x0C, 0x43, 0x24, 0xBD, 0x4F]


def test_crc_vendor_examples():
    assert p.crc8(b"BC1,000456F0,00057E40,1EDC,") == 0x3C
    assert p.crc8(b"BV2,00,0000,08,8B85858585868587,") == 0x93


def test_crc_matches_the_bitwise_0x18_form():
    def vendor_style(data: bytes) -> int:
        crc = 0
        for byte in data:
            for _ in range(8):
                feedback = (crc ^ byte) & 1
                if feedback:
                    crc ^= 0x18
                crc >>= 1
                if feedback:
                    crc |= 0x80
                byte >>= 1
        return crc

    rnd = random.Random(5)
    for _ in range(500):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
        assert p.crc8(data) == vendor_style(data)


# --- building -----------------------------------------------------------------------------


def test_request_bytes():
    assert p.request("BV1", sync=False) == b"BV1,?,4F\r\n"
    assert p.request("BV1") == b"\r\nBV1,?,4F\r\n"
    ss1 = p.request("SS1", "0A", sync=False)
    assert ss1.startswith(b"SS1,0A,") and p.crc8(b"SS1,0A,") == int(ss1[7:9], 16)


@pytest.mark.parametrize("name,arg", [("SC1", "?"), ("FD1", "?"), ("LG1", "c"),
                                      ("SS1", "c"), ("XX1", "?"), ("BV1", "1")])
def test_request_refuses_anything_that_could_write(name, arg):
    with pytest.raises(ValueError):
        p.request(name, arg)


def test_write_sentences():
    assert p.write_sentence("RC1", sync=False) == b"RC1," + b"%02X" % p.crc8(b"RC1,") + b"\r\n"
    assert p.write_sentence("LG1", ("c",), sync=False).startswith(b"LG1,c,")
    assert p.soc_field(79.0) == "1EDC"
    with pytest.raises(ValueError):
        p.write_sentence("BV1", ("?",))
    with pytest.raises(ValueError):
        p.soc_field(101)
    with pytest.raises(ValueError):
        p.encode_sentence("BV1", ("a,b",))
    with pytest.raises(ValueError):
        p.encode_sentence("bv1")


def test_hex_encoders_clamp_and_sign():
    assert p.hexf(0x1234, 4) == "1234" and p.hexf(-5, 2) == "00" and p.hexf(999, 2) == "FF"
    assert p.hex_signed(-4, 4) == "FFFC" and p.hex_signed(40000, 4) == "7FFF"


# --- vendor examples decode (§7) -----------------------------------------------------------


def test_vendor_bc1_example():
    [s] = sentences(parse_all(b"BC1,000456F0,00057E40,1EDC,3C\r\n"))
    d = p.decode(s)
    assert d.values == {"charge_c": 284400, "capacity_c": 360000, "soc_pct": 79.0}
    assert d.values["charge_c"] / 3600 == 79.0 and d.values["capacity_c"] / 3600 == 100.0


def test_vendor_bv2_example():
    [s] = sentences(parse_all(b"BV2,00,0000,08,8B85858585868587,93\r\n"))
    g = p.decode(s)
    assert isinstance(g, p.Group) and (g.string, g.first, g.size) == (0, 0, 8)
    assert [p.group_value("BV2", r) for r in g.raw] == [3.39, 3.33, 3.33, 3.33, 3.33, 3.34,
                                                        3.33, 3.35]


def test_st1_example_body_decodes():
    body = ["00", "00", "0000", "000128E3", "07", "0000", "00", "00040802"]
    line = p.encode_sentence("ST1", body)
    d = p.decode(sentences(parse_all(line))[0])
    assert d.values == {"stage": 0, "error": 0, "error_param": 0, "stage_duration_s": 0x128E3,
                        "status_flags": 7, "protection_flags": 0, "reduction_flags": 0,
                        "pin_flags": 0x40802}
    pins = p.bits(d.values["pin_flags"], p.PIN_FUNCTIONS)
    assert [n for n, on in pins.items() if on] == ["speed_sensor", "battery_contactor",
                                                    "zvu_boost_charge"]
    status = p.bits(7, p.STATUS_BITS)
    assert [n for n, on in status.items() if on] == ["cell_voltages_valid",
                                                      "module_temperatures_valid",
                                                      "balancing_rates_valid"]


def test_cv1_example_and_negative_current():
    body = ["000015AD", "0004", "01FF", "01FD", "01FA", "03FC", "09DA", "66CF", "0000", "0000"]
    d = p.decode(p.Sentence("CV1", tuple(body)))
    assert d.values == {"voltage_v": 55.49, "current_a": 0.4} and d.extra == ()
    d = p.decode(p.Sentence("CV1", ("000015AD", "FFFC")))
    assert d.values["current_a"] == -0.4
    assert p.parse_signed("FF") == -1 and p.parse_signed("8000") == -32768


def test_summary_scalings():
    bv1 = p.decode(p.Sentence("BV1", ("0010", "82", "86", "84", "000014C8", "")))
    assert bv1.values == {"cells": 16, "min_v": 3.3, "max_v": 3.34, "avg_v": 3.32,
                          "total_v": 53.2}
    bt1 = p.decode(p.Sentence("BT1", ("0010", "5A", "7D", "FF", "")))
    assert bt1.values == {"cells": 16, "min_c": -10.0, "max_c": 25.0, "avg_c": 155.0}
    bb1 = p.decode(p.Sentence("BB1", ("0010", "00", "FF", "33", "", "8C")))
    assert bb1.values == {"cells": 16, "min_pct": 0.0, "max_pct": 100.0, "avg_pct": 20.0,
                          "threshold_v": 3.4}
    td1 = p.decode(p.Sentence("TD1", ("2024", "05", "01", "12", "00", "09", "0000003C")))
    assert td1.values["year"] == 2024 and td1.values["second"] == 9
    assert td1.values["uptime_s"] == 60
    vr1 = p.decode(p.Sentence("VR1", ("G1CU", "0001A2B3", "2.0.19_RC9")))
    assert vr1.values == {"hardware": "G1CU", "serial": "0001A2B3", "firmware": "2.0.19_RC9"}
    dt1 = p.decode(p.Sentence("DT1", ("0064", "04D2") + ("0001",) * 10))
    assert dt1.values["speed_kmh"] == 10.0 and dt1.values["distance_since_charge_km"] == 12.34
    assert dt1.values["last_charge_energy_wh"] == 1.0


def test_empty_fields_are_no_data_and_extra_fields_are_kept_raw():
    line = p.encode_sentence("BV1", ("",) * 6)
    assert line.startswith(b"BV1,,,,,,,")
    d = p.decode(sentences(parse_all(line))[0])
    assert all(v is None for v in d.values.values())
    d = p.decode(p.Sentence("BC1", ("000456F0", "00057E40", "1EDC", "0001", "ABCD")))
    assert d.values["soc_pct"] == 79.0 and d.extra == ("0001", "ABCD")
    d = p.decode(p.Sentence("ST1", ("03", "00")))  # missing trailing fields
    assert d.values["stage"] == 3 and d.values["pin_flags"] is None


def test_lists_decode():
    e = p.decode(p.Sentence("LG1", ("0003", "16", "0002", "00000E10")))
    assert isinstance(e, p.LogEvent) and (e.sequence, e.code, e.data, e.time_s) == (3, 22, 2, 3600)
    assert e.text == "charger_connected" and p.timestamp(3600) == "2000-01-01T01:00:00"
    s = p.decode(p.Sentence("SS1", ("0A", "00000082", "0003", "00000000")))
    assert isinstance(s, p.Statistic) and s.key == "min_cell_voltage_v" and s.scaled == 3.3
    assert p.decode(p.Sentence("SS1", ("28", "5", "", ""))).key == "statistic_40"


@pytest.mark.parametrize("sentence", [
    p.Sentence("BV1", ("00G0",)),
    p.Sentence("TD1", ("20A4",)),
    p.Sentence("BV2", ("00", "0000", "09", "00" * 9)),
    p.Sentence("BV2", ("00", "0000", "08", "8B85")),
    p.Sentence("BV2", ("00", "00FC", "08", "00" * 8)),
    p.Sentence("BV2", ("00", "0000")),
    p.Sentence("BV2", ("", "0000", "08", "")),
    p.Sentence("LG1", ("", "01")),
    p.Sentence("SS1", ("",)),
    p.Sentence("XY1", ("?",)),
])
def test_malformed_fields_are_framing_errors(sentence):
    with pytest.raises(FramingError):
        p.decode(sentence)


def test_group_with_empty_array_is_no_data():
    g = p.decode(p.Sentence("BT2", ("00", "0008", "04", "")))
    assert g.raw is None and g.size == 4 and g.key == (0, 8)


@pytest.mark.parametrize("cells", [1, 7, 8, 9, 16, 20, 24, 48, 255])
def test_groups_round_trip_for_every_cell_count(cells):
    raw = [(i * 7) % 256 for i in range(cells)]
    data = p.encode_groups("BV2", raw)
    lines = sentences(parse_all(data))
    assert len(lines) == p.groups_needed(cells) == -(-cells // 8)
    back = []
    for line in lines:
        g = p.decode(line)
        assert g.first == len(back)
        back.extend(g.raw)
    assert back == raw
    assert p.answer_bytes("BV2", cells) >= len(data)


# --- the parser -----------------------------------------------------------------------------

STREAM = (b"BC1,000456F0,00057E40,1EDC,3C\r\n" b"BV2,00,0000,08,8B85858585868587,93\r\n"
          b"BV1,?,4F\r\n")


def test_parser_byte_by_byte():
    parser = p.SentenceParser()
    got = []
    for byte in STREAM:
        got.extend(parser.events(bytes((byte,))))
    assert [s.name for s in got] == ["BC1", "BV2", "BV1"]
    assert parser.buffered == 0 and parser.close() is None


def test_parser_needs_data_until_the_line_ends():
    parser = p.SentenceParser()
    parser.feed(b"BC1,000456F0,00057E40,1EDC,3C")
    assert parser.next_event() is p.NEED_DATA
    parser.feed(b"\r")
    assert isinstance(parser.next_event(), p.Sentence)
    parser.feed(b"\n")
    assert parser.next_event() is p.NEED_DATA


def test_parser_leading_and_trailing_garbage_and_cr_only_lines():
    events = parse_all(b"\x00\xff#junk" + STREAM.replace(b"\r\n", b"\r") + b"tail")
    assert [s.name for s in sentences(events)] == ["BC1", "BV2", "BV1"]
    assert [type(e) for e in events if not isinstance(e, p.Sentence)] == [FramingError]
    parser = p.SentenceParser()
    list(parser.events(b"BV1,?,4F\r\ntail"))
    assert isinstance(parser.close(), FramingError)


def test_parser_bad_crc_rejected_and_next_good_line_found():
    bad = b"BC1,000456F0,00057E40,1EDD,3C\r\n"
    events = parse_all(bad + STREAM)
    assert isinstance(events[0], ChecksumError)
    assert [s.name for s in sentences(events)] == ["BC1", "BV2", "BV1"]
    assert sentences(events)[0].fields[2] == "1EDC"


def test_parser_cut_line_glued_to_the_next_sentence():
    cut = b"BV2,00,0000,08,8B8585"  # truncated answer, no CR LF, then the next answer
    events = parse_all(cut + STREAM)
    assert isinstance(events[0], FramingError) and "skipped 21 bytes" in str(events[0])
    assert [s.name for s in sentences(events)] == ["BC1", "BV2", "BV1"]


def test_parser_noise_inside_a_line_is_not_a_sentence():
    events = parse_all(b"BC1,000456F0,00\x0357E40,1EDC,3C\r\n")
    assert len(events) == 1 and isinstance(events[0], ProtocolError)


def test_parser_over_long_line_is_dropped_once():
    parser = p.SentenceParser(max_line=64)
    events = list(parser.events(b"A" * 50))
    events += list(parser.events(b"B" * 50))
    events += list(parser.events(b"C" * 50 + b"\r\n" + STREAM))
    assert [type(e) for e in events][:1] == [FramingError]
    assert len([e for e in events if isinstance(e, FramingError)]) == 1
    assert [s.name for s in sentences(events)] == ["BC1", "BV2", "BV1"]


def test_parser_skip_first_partial_line():
    parser = p.SentenceParser(skip_first_partial=True)
    got = list(parser.events(b"57E40,1EDC,3C\r\n" + STREAM))
    assert [type(e) for e in got] == [p.Sentence] * 3 and parser.skipped_partial == 1
    parser = p.SentenceParser(skip_first_partial=True)
    assert [s.name for s in parser.events(STREAM)] == ["BC1", "BV2", "BV1"]
    assert parser.skipped_partial == 0


def test_lowercase_checksum_is_accepted():
    assert sentences(parse_all(b"BV1,?,4f\r\n"))[0] == p.Sentence("BV1", ("?",))


# --- hypothesis -----------------------------------------------------------------------------


@st.composite
def chunked(draw, data: bytes):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


ALPHABET = b"BVCTSDOINGLRP0123456789ABCDEF,?\r\n\x00\xff"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.lists(st.sampled_from(list(ALPHABET)), max_size=300).map(bytes)),
       st.data())
def test_random_bytes_only_give_sentences_or_protocol_errors(data, draw):
    parser = p.SentenceParser(max_line=128)
    for chunk in draw.draw(chunked(data)):
        for event in parser.events(chunk):
            assert isinstance(event, (p.Sentence, ProtocolError))
            if isinstance(event, p.Sentence):
                body = event.raw[:-4]
                assert p.crc8(body) == int(event.raw[-4:-2], 16)
                try:
                    p.decode(event)
                except ProtocolError:
                    pass
    end = parser.close()
    assert end is None or isinstance(end, ProtocolError)


def _random_sentence(rnd: random.Random) -> p.Sentence:
    name = rnd.choice(p.READS)
    if name in p.GROUPS:
        size = rnd.randint(1, 8)
        fields = (p.hexf(rnd.randrange(2), 2), p.hexf(8 * rnd.randrange(31), 4),
                  p.hexf(size, 2), "".join(p.hexf(rnd.randrange(256), 2) for _ in range(size)))
    elif name == "VR1":
        fields = ("G1CU", p.hexf(rnd.randrange(1 << 32), 8), "2.0.19")
    elif name == "TD1":
        fields = (*tuple(str(rnd.randrange(60)) for _ in range(6)), p.hexf(5, 8))
    else:
        count = len(p.LAYOUTS.get(name, ())) or 4
        fields = tuple(rnd.choice(["", p.hexf(rnd.randrange(1 << 16), 4)])
                       for _ in range(count + rnd.randrange(3)))
        if name in ("LG1", "SS1"):
            fields = ("01", "02", *fields[2:])
    return p.Sentence(name, fields)


# noise that cannot end a line or hold a sentence start of its own
noise_strategy = st.binary(max_size=12).map(
    lambda b: bytes(c for c in b if c not in b"\r\n,"))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 12), st.lists(noise_strategy, min_size=13,
                                                            max_size=13), st.data())
def test_valid_sentences_in_any_order_with_noise_are_all_recovered(seed, count, noises, draw):
    rnd = random.Random(seed)
    stream_sentences = [_random_sentence(rnd) for _ in range(count)]
    rnd.shuffle(stream_sentences)
    stream = b"".join(noise + s.raw for s, noise in zip(stream_sentences, noises))
    parser = p.SentenceParser()
    got = []
    for chunk in draw.draw(chunked(stream)):
        got.extend(e for e in parser.events(chunk) if isinstance(e, p.Sentence))
    assert got == stream_sentences
    for s in got:
        decoded = p.decode(s)  # every generated sentence is well-formed
        assert decoded is not None
