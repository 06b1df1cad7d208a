"""The TriStar MPPT codec: the reference's worked examples, word order, signedness, names,
and fuzzing (only ProtocolError may come out of a decoder)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslogger.errors import FramingError, ProtocolError, UnexpectedAnswerError
from bmslogger.plugins.tristar import protocol as p


def ram_words(**overrides: int) -> list[int]:
    """An 80-word RAM block of a TS-MPPT-60 (V_PU 180, I_PU 80) with some words set."""
    w = [0] * p.RAM_POLL_WORDS
    w[p.V_PU_HI], w[p.I_PU_HI] = 180, 80
    for name, value in overrides.items():
        w[getattr(p, name.upper())] = value
    return w


# --- worked examples of the reference (§5) ----------------------------------------------------


def test_scaling_constants_divide_the_fraction_by_65536():
    assert p.scaling(0x004E, 0x03A6) == pytest.approx(78.01425, abs=1e-5)
    assert p.scaling(0x007B, 0xE041) == pytest.approx(123.876, abs=1e-3)
    assert p.scaling(180, 0) == 180.0


def test_voltage_current_power_examples():
    assert p.voltage(0x0DB0, p.scaling(0x007B, 0xE041)) == pytest.approx(13.25, abs=0.005)
    assert p.voltage(2445, 180.0) == pytest.approx(13.43, abs=0.005)
    assert p.current(0xFFA8, 80.0) == pytest.approx(-0.215, abs=0.001)  # not 159.8 A
    assert p.power(23, 180.0, 80.0) == pytest.approx(2.53, abs=0.005)


def test_32_bit_ram_counters_are_hi_word_first():
    ram = p.decode_ram(ram_words(ahc_r_hi=2, ahc_r_lo=59270, hourmeter_hi=1,
                                 hourmeter_lo=21481, alarm_hi=0x0008, alarm_lo=0x0001))
    assert ram.ahc_r == 19034.2
    assert ram.hourmeter == 87017
    assert ram.alarm == (1 << 19) | 1


def test_eeprom_copies_are_lo_word_first():
    words = [21481, 1, 59270, 2, 10, 0, 7, 2477, 2445, 2445, 0, 5, 0]
    stats = p.decode_eeprom_stats(words, 180.0)
    assert stats.ehourmeter == 87017 and stats.eahc_r == 19034.2 and stats.eahc_t == 1.0
    assert stats.ekwhc_t == 2477 and stats.evb_min == pytest.approx(13.43, abs=0.005)


def test_signed_values_and_temperatures():
    ram = p.decode_ram(ram_words(adc_ib_f_shadow=0xFFA8, t_hs=0xFFF6, t_batt=25, t_rts=0x0080,
                                 tb_min_daily=0xFFFB, vb_ref=0, sweep_vmp=0x8000))
    assert ram.adc_ib_f_shadow == pytest.approx(-0.2148, abs=1e-4)
    assert ram.t_hs == -10 and ram.t_batt == 25 and ram.tb_min_daily == -5
    assert ram.t_rts is None  # not connected
    assert p.decode_ram(ram_words(t_rts=0xFF80)).t_rts is None
    assert p.decode_ram(ram_words(t_rts=7)).t_rts == 7
    assert ram.sweep_vmp == -180.0


def test_powers_are_unsigned():
    assert p.decode_ram(ram_words(power_out=0xFFFF)).power_out == pytest.approx(
        65535 * 180 * 80 / 131072, abs=0.001)


def test_internal_supplies_use_fixed_full_scales():
    ram = p.decode_ram(ram_words(adc_p12_f=23557, adc_p3_f=17972, adc_pmeter_f=22800,
                                 adc_p18_f=19442, adc_v_ref=22282))
    assert ram.adc_p12_f == pytest.approx(13.38, abs=0.01)
    assert ram.adc_p3_f == pytest.approx(3.62, abs=0.01)
    assert ram.adc_pmeter_f == pytest.approx(12.95, abs=0.01)
    assert ram.adc_p18_f == pytest.approx(1.78, abs=0.01)
    assert ram.adc_v_ref == pytest.approx(2.04, abs=0.01)


def test_faults_alarms_flags_dip_names():
    flags = p.bit_flags(0x0013, p.FAULT_NAMES)
    assert [n for n, on in flags.items() if on] == ["overcurrent", "fets_shorted", "array_hvd"]
    alarm = p.alarm_fields(0x0013, (1 << 19) | (1 << 8))
    assert alarm["fault_array_hvd"] and alarm["alarm_controller_was_reset"]
    assert alarm["alarm_battery_sense_out_of_range"] and not alarm["alarm_rts_open"]
    assert alarm["active_count"] == 5
    assert len(alarm) == 16 + 24 + 1
    assert p.bit_flags(9, p.DAILY_FLAG_NAMES) == {
        "reset_detected": True, "equalize_triggered": False, "entered_float": False,
        "alarm_occurred": True, "fault_occurred": False}
    dip = p.DipSwitches(188)  # a real 12 V unit: switches 3, 4, 5, 6, 8 ON
    assert [k for k, on in enumerate(dip.switches, 1) if on] == [3, 4, 5, 6, 8]
    assert dip.system_voltage == "12v" and dip.charging_program == 8
    assert p.DipSwitches(0b10).system_voltage == "24v"
    assert p.DipSwitches(0).charging_program == 1


def test_enums():
    assert [p.charge_state_name(i) for i in (3, 5, 6, 7, 9)] == [
        "night", "mppt", "absorption", "float", "slave"]
    assert p.charge_state_name(42) == "unknown_42"
    assert p.led_state_name(5) == "green_blink_1hz" and p.led_state_name(16) == "r_g_error_hvd"
    assert len(p.LED_STATES) == 20 and len(p.CHARGE_STATES) == 10


def test_settings_block_needs_34_words_and_decodes_the_last_two():
    words = [0] * p.SETTINGS_WORDS
    words[0x00] = p.encode_voltage(28.8, 180.0)
    words[0x0D] = p.encode_tempcomp(0.06, 180.0)
    words[0x11] = p.word_s16(-5)
    words[0x1D] = p.encode_current(45.0, 80.0)
    words[0x20] = p.encode_voltage(70.0, 180.0)  # EVa_ref_fixed_init, word 32
    words[0x21] = p.encode_percent_of_voc(80.0)  # EVa_ref_fixed_pct_init, word 33
    s = p.decode_settings(words, 180.0, 80.0)
    assert s["ev_absorp"] == pytest.approx(28.8, abs=0.006)
    assert s["ev_tempcomp"] == pytest.approx(-0.06, abs=0.003) and s["ev_tempcomp"] < 0
    assert s["etb_max"] == -5.0 and s["eib_lim"] == pytest.approx(45.0, abs=0.003)
    assert s["eva_ref_fixed_init"] == pytest.approx(70.0, abs=0.006)
    assert s["eva_ref_fixed_pct_init"] == pytest.approx(80.0, abs=0.002)
    assert len(s) == len(p.SETTINGS_MAP) == 27
    with pytest.raises(FramingError):
        p.decode_settings(words[:32], 180.0, 80.0)  # the greenhouse code's 32 words


def test_identity_serial_low_byte_first_model_and_hardware():
    words = p.encode_serial("16130421") + [0] * 8 + [1, 0x0302]
    assert words[0] == ord("1") | ord("6") << 8
    ident = p.decode_identity(words)
    assert (ident.serial, ident.model, ident.hardware_version) == ("16130421", "TS-MPPT-60",
                                                                   "3.2")
    assert p.decode_identity([0] * 12 + [2, 0]).model == "TS-MPPT-30"


def test_version_bcd():
    assert p.version_bcd(0x0012) == "12" and p.encode_bcd("142") == 0x0142


def test_manual_control_words_when_92_words_are_read():
    w = ram_words() + [0] * 12
    w[p.VB_REF_SLAVE] = p.encode_voltage(27.0, 180.0)
    w[p.VA_REF_FIXED_PCT] = p.encode_percent_of_voc(75.0)
    ram = p.decode_ram(w)
    assert ram.vb_ref_slave == pytest.approx(27.0, abs=0.006)
    assert ram.va_ref_fixed_pct == pytest.approx(75.0, abs=0.002)
    assert p.decode_ram(ram_words()).vb_ref_slave is None


def test_bad_blocks_raise_protocol_errors():
    with pytest.raises(FramingError):
        p.decode_ram([0] * 79)
    with pytest.raises(FramingError):
        p.decode_ram(ram_words(vb_ref=70000))
    with pytest.raises(UnexpectedAnswerError):
        p.decode_ram([0] * 80)  # V_PU 0: not a TriStar answer


# --- encoders round-trip within one count -------------------------------------------------------


@given(st.floats(-180.0, 179.9), st.floats(-80.0, 79.9), st.floats(0.0, 7199.0))
def test_encoders_round_trip_within_one_count(volts, amps, watts):
    assert abs(p.voltage(p.encode_voltage(volts, 180.0), 180.0) - volts) <= 180 / 32768
    assert abs(p.current(p.encode_current(amps, 80.0), 80.0) - amps) <= 80 / 32768
    assert abs(p.power(p.encode_power(watts, 180.0, 80.0), 180.0, 80.0) - watts) <= 0.12


@given(st.floats(1.0, 999.0))
def test_scaling_round_trip(value):
    assert abs(p.scaling(*p.encode_scaling(value)) - value) <= 1 / 65536


# --- fuzzing: any words give values or a ProtocolError ---------------------------------------


@settings(max_examples=300)
@given(st.lists(st.integers(-5, 0x1FFFF), max_size=100), st.floats(0.5, 500), st.floats(0.5, 500))
def test_decoders_only_raise_protocol_errors(words, v_pu, i_pu):
    for decode in (
        p.decode_ram,
        lambda w: p.decode_settings(w, v_pu, i_pu),
        lambda w: p.decode_eeprom_stats(w, v_pu),
        p.decode_identity,
    ):
        try:
            decode(words)
        except ProtocolError:
            pass


@settings(max_examples=200)
@given(st.lists(st.integers(0, 0xFFFF), min_size=80, max_size=92))
def test_any_full_ram_block_with_scaling_decodes(words):
    words[p.V_PU_HI] = max(1, words[p.V_PU_HI])
    words[p.I_PU_HI] = max(1, words[p.I_PU_HI])
    ram = p.decode_ram(words)
    assert isinstance(p.charge_state_name(ram.charge_state), str)
    assert 0 <= ram.alarm < 1 << 32 and 0 <= ram.hourmeter < 1 << 32
    assert p.DipSwitches(ram.dip_all).system_voltage in ("auto", "12v", "24v", "48v")
