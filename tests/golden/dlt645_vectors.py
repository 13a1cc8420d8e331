"""Golden DL/T 645-2007 and -1997 frames published by third parties, with what each source says they mean.

Why this exists: a codec tested only against itself can be consistently wrong (the same mistake in the
encoder and the decoder round-trips perfectly). These frames were written down by other people — meter
vendors' manuals, blog posts, other open-source implementations' tests and captured exchange logs — so
they pin our decoder to the wire as others see it.

Rules the data follows:

* ``hex`` is the frame exactly as published (spacing and FE preamble kept; where the source printed a
  C/JS byte array it is rewritten as spaced hex of the identical bytes, and the note says so).
* ``source`` names a URL, or ``owner/repo@commit:path:line`` of a public GitHub repository.
* ``expected`` holds only what the source itself supports, using the keys of the ``gwtool dlt645
  decode`` JSON (DESIGN §2). Structural keys (address, control, function, direction, di) follow from
  the published bytes and the source's own labelling; ``values``/``unit`` appear only where the
  source states the decoded value. Addresses are written as on the nameplate (most significant digit
  first), even where a source prints them in wire order (the note says so).
* Every frame was re-checked by hand: start/second 68H, length byte, modulo-256 checksum from the first
  68H, end 16H, the +33H scrambling of the data field, the reversed BCD address and the published value.
  Frames that failed one of those checks, or whose published decoding is wrong, are in :data:`ERRATA`
  with the reason, not in :data:`GOLDEN`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GoldenFrame:
    """A published frame. Fields: ``name`` (short id), ``hex`` (as published), ``source`` (where),
    ``note`` (what the source says the frame is), ``expected`` (decode JSON subset the source supports)."""

    name: str
    hex: str
    source: str
    note: str
    expected: dict[str, Any]


@dataclass(frozen=True)
class Erratum:
    """A published frame, or a published decoding of one, that is wrong.

    Fields: ``name``, ``hex`` (as published), ``source``, ``problem`` (what is wrong and why, with the
    arithmetic), ``rejects`` (True when a conforming decoder must refuse the bytes: bad checksum,
    unscrambled data, a function the edition does not have), ``corrected`` (decode JSON subset the bytes
    really carry per the standard, when they are a valid frame whose published *interpretation* is
    wrong; empty when ``rejects``).
    """

    name: str
    hex: str
    source: str
    problem: str
    rejects: bool
    corrected: dict[str, Any] = field(default_factory=dict)


# Sources, named once. Repository snapshots are identified by the commit that was read.
_MYAIAPP = ("https://www.myaiappgames.com/archives/1280 — 'DL/T645-2007 and MODBUS Protocol Parsing and "
            "Debugging for Smart Meters' (blog post)")
_HEYUAN = ("https://manualshive.com/en/manual/heyuan-intelligence/asdu-ls/2128413?page=18 — Heyuan "
           "Intelligence ASDU-LS manual, 'Formats of commands sent of 1997 DL/T645 protocol', Screen 9-17/9-18")
_KALEDL = ("https://kaledl.com/down/1493168.html — download page for an RS-485 meter-reading example "
           "('读取编号为RS3430163的多功能电表的总电能')")
_JAYLA = "Jayla630/Dlt645Master@b29c757:tests/Dlt645Master.Core.Tests/Dlt645ProtocolContractTests.cs"
_UNSURPER = "unsurper/dlt645go@a1f8250:test/dlt645_0x33333433_test.go"
_CQQQQ = "cqqqq/godlt645@17dd9d5:protocol_test.go"
_PEACE = "peace0phmind/dlt645@1ec047a:frame_test.go"
_JOHNGAI_PARSER = "johngai19/dlt645Driver@c5f3a16:test/dltparser_test.js"
_JOHNGAI_DRIVER = "johngai19/dlt645Driver@c5f3a16:test/dltdriver_test.js"
_VACCARIA = "VaccariaSeed/go-dlt645-2007@428a179:master_test.go"
_FDXXW = "fdxxw/rs-dlt645@dc4f46e:src/frame.rs"
_TYHONGJY = "ty-hongjy/dl645@ba36c2b:dlt645-2007/2007-test.ts"
_GAMS = "gams/python-dlt645@4be4a0a:dlt645/__init__.py"
_AIXIWANG = "aixiwang/python_dlt645@4eed4a7:read_dlt645.py"
_GREENSEA = "greensea/dlt645@41affc2:src/dlt645.c"
_SULFUR = "sulfurandcu/dlt645-tool@8a4a54a:code/Model/DLT645CoreModel.cs"
_SANDXIN = "sandxin/dlt645@1da8b18:README.md"
_THEMEYIC = "themeyic/go-dlt645@b9a2e8e:dlt645client.go"
_GDGLY = "gdgly/NUC97X_JS@b8a5193:STM32F4xx/DL698/RM_TxDATA_DL2007.cpp"
_KTS = "KTS-Intek/DLT645@8e6f04a:test-exchange-dlt645-97.log"
_JWANG = "jwangyaxin/dlt645_97@f619320:dlt645.py"


GOLDEN: tuple[GoldenFrame, ...] = (
    # ------------------------------------------------------------------ DL/T 645-2007 -------------
    GoldenFrame(
        name="g07_read_import_energy_wildcard_request",
        hex="68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16",
        source=f"{_MYAIAPP}; also asserted byte-for-byte in {_JAYLA}:18",
        note="Read request to the all-AA wildcard address; the blog dissects it field by field (control 11, "
             "length 04, data 33 33 34 33, CS AE). Jayla630's test builds it as "
             "BuildReadRequest(BroadcastAddress, ForwardActiveEnergy) = DI 00010000.",
        expected={"address": "AAAAAAAAAAAA", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "00010000"},
    ),
    GoldenFrame(
        name="g07_read_import_energy_reply_0_00",
        hex="68 01 72 00 72 00 00 68 91 08 33 33 34 33 33 33 33 33 E7 16",
        source=f"{_JAYLA}:24-36",
        note="Reply to the read above from meter (wire order 01 72 00 72 00 00); the test asserts item "
             "'正向有功总电能', Value 0.00, Unit 'kWh', ControlCode 0x91.",
        expected={"address": "000072007201", "control": 0x91, "function": "read_data",
                  "direction": "reply", "error": None, "more_follows": False, "di": "00010000",
                  "values": ["0.00"], "unit": "kWh"},
    ),
    GoldenFrame(
        name="g07_read_import_energy_reply_0_02",
        hex="68 76 02 02 47 02 02 68 91 08 33 33 34 33 35 33 33 33 C9 16",
        source=f"{_UNSURPER}:11-17",
        note="Positive active total energy reply (decoder struct Dlt_0x33333433, field WP '正向有功总电能'); "
             "the test asserts DeviceID '020247020276' and WP 0.02.",
        expected={"address": "020247020276", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "00010000", "values": ["0.02"]},
    ),
    GoldenFrame(
        name="g07_read_import_energy_reply_cqqqq",
        hex="681401003182216891083333343339333333f116",
        source=f"{_CQQQQ}:14-32",
        note="Decoded with Ver2007; the test asserts slave/read state and data length 8. It asserts the "
             "address string '140100318221', which is the wire byte order — nameplate 218231000114. "
             "The value is only printed, not asserted.",
        expected={"address": "218231000114", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "00010000"},
    ),
    GoldenFrame(
        name="g07_read_voltage_c_reply_cqqqq",
        hex="68111100000000689106333634353355E316",
        source=f"{_CQQQQ}:54-65",
        note="TestRead2007: reply decoded with Ver2007 next to a request built for address "
             "'000000001111' and DI 0x02_01_03_00 (C-phase voltage); value printed, not asserted.",
        expected={"address": "000000001111", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "02010300"},
    ),
    GoldenFrame(
        name="g07_read_combined_energy_request",
        hex="68 90 78 56 34 12 00 68 11 04 33 33 33 33 55 16",
        source=f"{_PEACE}:155-161",
        note="NewReadFrame('1234567890', DICTotalActiveEnergy, PV2007) (published as a Go byte slice). "
             "The DI sent is 00000000, which DL/T 645-2007 Appendix A calls combined active total energy.",
        expected={"address": "001234567890", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "00000000"},
    ),
    GoldenFrame(
        name="g07_read_voltage_a_request",
        hex="68 78 56 34 12 00 00 68 11 04 33 34 34 35 C9 16",
        source=f"{_PEACE}:162-168",
        note="NewReadFrame('12345678', DICPhaseAVoltage, PV2007) (published as a Go byte slice).",
        expected={"address": "000012345678", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "02010100"},
    ),
    GoldenFrame(
        name="g07_read_voltage_a_reply_229_7",
        hex="FE FE FE FE 68 43 10 00 11 34 00 68 91 06 33 34 34 35 CA 55 EE 16",
        source=f"{_JOHNGAI_PARSER}:27-40",
        note="bufToCmd must give {sn: '3411001043', cmd: '91', propertyName: 'elecUa', value: 2297} "
             "(published as a JS byte array). 2297 is the raw BCD in the standard's XXX.X V format, "
             "i.e. 229.7 V.",
        expected={"address": "003411001043", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "02010100", "values": ["229.7"]},
    ),
    GoldenFrame(
        name="g07_read_power_factor_request",
        hex="FE FE FE FE 68 43 10 00 11 34 00 68 11 04 33 33 39 35 51 16",
        source=f"{_JOHNGAI_DRIVER}:62-64",
        note="First poll frame _fetchValue() must yield for meter 3411001043 (published as a JS byte array); "
             "DI 02060000 total power factor.",
        expected={"address": "003411001043", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "02060000"},
    ),
    GoldenFrame(
        name="g07_read_frequency_request",
        hex="FE FE FE FE 68 43 10 00 11 34 00 68 11 04 35 33 B3 35 CD 16",
        source=f"{_JOHNGAI_DRIVER}:65-66",
        note="Second poll frame of the same test (published as a JS byte array); DI 02800002 grid frequency.",
        expected={"address": "003411001043", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "02800002"},
    ),
    GoldenFrame(
        name="g07_read_frequency_reply_50_03",
        hex="FE FE FE FE6800 51 44 18 11 1768910635 33 B3 35 36 834516",
        source=f"{_VACCARIA}:69-80 (same frame in README.md)",
        note="Reply parsed after registering DI 02 80 00 02 with NewMeterDataParser(2, nil, 0.01, 0, 'HZ'): "
             "2-byte BCD times 0.01 → 50.03 (the source's unit spelling is 'HZ').",
        expected={"address": "171118445100", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "02800002", "values": ["50.03"]},
    ),
    GoldenFrame(
        name="g07_read_vendor_di_request",
        hex="fefefefe680200310822206811043255b335d116",
        source=f"{_FDXXW}:365-372",
        note="ProtocolDataUnit::from_cmd('202208310002', '11', ['028022FF']) must serialise to this string.",
        expected={"address": "202208310002", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "028022FF"},
    ),
    GoldenFrame(
        name="g07_read_current_a_request",
        hex="68020011112420681104333435351E16",
        source=f"{_TYHONGJY}:13-18",
        note="EXPECTED_COMMANDS.A_CURRENT for meter 202411110002, described as a real command "
             "('真实命令常量', sent after a FEFEFEFE preamble): A-phase current DI 02020100.",
        expected={"address": "202411110002", "control": 0x11, "function": "read_data",
                  "direction": "request", "di": "02020100"},
    ),
    GoldenFrame(
        name="g07_read_address_request",
        hex="FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16",
        source=f"{_GAMS}:293-303",
        note="get_addr(): 'request address using broadcast target address' (published as a Python bytes "
             "literal). The same bytes appear in fdxxw/rs-dlt645, fdxxw/go-dlt645 README and KTS-Intek's log.",
        expected={"address": "AAAAAAAAAAAA", "control": 0x13, "function": "read_address",
                  "direction": "request"},
    ),
    GoldenFrame(
        name="g07_read_address_reply",
        hex="FE FE FE FE 68 69 40 17 10 12 00 68 93 06 9C 73 4A 43 45 33 5F 16",
        source=f"{_AIXIWANG}:259-265",
        note="'test decode_dlt645' (published as a Python bytes literal): passes when addr == data == "
             "69 40 17 10 12 00 (wire order) and ctl == 0x93.",
        expected={"address": "001210174069", "control": 0x93, "function": "read_address",
                  "direction": "reply"},
    ),
    GoldenFrame(
        name="g07_change_baud_request_2400",
        hex="68 01 00 12 01 19 20 68 17 01 3B 70 16",
        source=f"{_GREENSEA}:163-178",
        note="Set-baud frame marked '正确协议' (the correct one, after a first attempt without +33H); "
             "the same function maps 2400 bit/s to the rate word 08H.",
        expected={"address": "201901120001", "control": 0x17, "function": "change_baud",
                  "direction": "request", "values": ["2400"]},
    ),
    GoldenFrame(
        name="g07_write_calibration_request",
        hex=("68 AA AA AA AA AA AA 68 14 2E 33 35 D5 37 33 6C 85 89 33 33 33 33 34 33 55 33 55 33 55 33 "
             "33 58 33 33 58 33 33 58 33 33 33 88 33 33 33 88 33 33 33 88 33 43 33 43 33 43 C6 16"),
        source=f"{_SULFUR}:613-614",
        note="Vendor calibration write ('计量校准：功率校准') to the wildcard address: DI 04A20200 "
             "(Global_DataIdx4), password 56523900, operator 00000000, then calibration data.",
        expected={"address": "AAAAAAAAAAAA", "control": 0x14, "function": "write_data",
                  "direction": "request", "di": "04A20200"},
    ),
    GoldenFrame(
        name="g07_voltage_block_reply",
        hex="68 60 64 02 09 22 04 68 91 0a 33 32 34 35 47 56 33 33 33 33 97 16",
        source=f"{_SANDXIN}:10-23",
        note="Parser output: no '0422-09026460', type '读数据应答帧', res_desc '电压数据块(V)', res_val 231.4 "
             "(only the A-phase value is shown; B and C are 0000).",
        expected={"address": "042209026460", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "0201FF00", "unit": "V"},
    ),
    GoldenFrame(
        name="g07_energy_block_reply",
        hex=("68 01 00 44 23 52 00 68 91 18 33 32 34 33 BC 36 33 33 33 33 33 33 33 33 33 33 BC 36 33 33 "
             "33 33 33 33 13 16"),
        source=f"{_THEMEYIC}:98",
        note="Reply kept as a comment next to the serial send loop (a capture from a real meter); "
             "DI 0001FF00, positive active energy total and tariffs 1-4. Values not stated.",
        expected={"address": "005223440001", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "0001FF00"},
    ),
    GoldenFrame(
        name="g07_voltage_c_reply",
        hex="68 01 00 44 23 52 00 68 91 06 33 36 34 35 95 55 dd 16",
        source=f"{_THEMEYIC}:99",
        note="Second captured reply from the same meter; DI 02010300 C-phase voltage. Value not stated.",
        expected={"address": "005223440001", "control": 0x91, "function": "read_data",
                  "direction": "reply", "di": "02010300"},
    ),
    GoldenFrame(
        name="g07_broadcast_time",
        hex="68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16",
        source=f"{_GDGLY}:184-185",
        note="Concentrator firmware comment '645-07广播校时' above BroadcastTime_TxDATA_DL645. The time is not "
             "stated; by DL/T 645-2007 (ssmmhhDDMMYY) it carries 2017-06-05 10:22:51.",
        expected={"address": "999999999999", "control": 0x08, "function": "broadcast_time",
                  "direction": "request"},
    ),
    GoldenFrame(
        name="g07_time_sync_single_address",
        hex="68 11 11 11 11 11 11 68 08 06 58 73 43 38 39 4A 0D 16",
        source=f"{_GDGLY}:186-188",
        note="Same file: '645广播单地址校时, 地址为 11 11 11 11 11 11' — the time-sync command sent to one "
             "address. Time not stated; it carries 2017-06-05 10:40:25.",
        expected={"address": "111111111111", "control": 0x08, "function": "broadcast_time",
                  "direction": "request"},
    ),
    # ------------------------------------------------------------------ DL/T 645-1997 -------------
    GoldenFrame(
        name="g97_read_voltage_a_request",
        hex="68 03 00 00 00 00 00 68 01 02 44 E9 03 16",
        source=_HEYUAN,
        note="'Send original message'; manual decodes Control Code 01H, DI1DI0 = B611H, length 02H. It "
             "prints the address in wire order as 030000000000H (nameplate 000000000003).",
        expected={"address": "000000000003", "control": 0x01, "function": "read_data",
                  "direction": "request", "di": "B611"},
    ),
    GoldenFrame(
        name="g97_read_voltage_a_reply_100",
        hex="68 03 00 00 00 00 00 68 81 04 44 E9 33 34 EC 16",
        source=_HEYUAN,
        note="'Receive original message'; manual decodes Control Code 81H, DI B611H, length 04H, "
             "'Data Domain: 0100V'.",
        expected={"address": "000000000003", "control": 0x81, "function": "read_data",
                  "direction": "reply", "error": None, "more_follows": False, "di": "B611",
                  "values": ["100"], "unit": "V"},
    ),
    GoldenFrame(
        name="g97_read_import_energy_request",
        hex="68 63 01 43 03 00 00 68 01 02 43 C3 83 16",
        source=_KALEDL,
        note="'读取编号为RS3430163的多功能电表的总电能' — read total energy (DI 9010) of meter 3430163.",
        expected={"address": "000003430163", "control": 0x01, "function": "read_data",
                  "direction": "request", "di": "9010"},
    ),
    GoldenFrame(
        name="g97_read_import_energy_reply_kaledl",
        hex="68 54 07 13 00 80 13 68 81 06 43 C3 34 33 33 33 2B 16",
        source=_KALEDL,
        note="Reply shown after the matching request '68 54 07 13 00 80 13 68 01 02 43 C3 DA 16' "
             "('能读电能表数据'). Value not stated.",
        expected={"address": "138000130754", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "9010"},
    ),
    GoldenFrame(
        name="g97_read_reactive_import_request",
        hex="FE FE 68 42 36 00 00 86 09 68 01 02 43 C4 E1 16",
        source=f"{_KTS}:57-58",
        note="'example send_command_3 Positive reactive energy DLT645-1997' (published as a C byte array); "
             "DI 9110.",
        expected={"address": "098600003642", "control": 0x01, "function": "read_data",
                  "direction": "request", "di": "9110"},
    ),
    GoldenFrame(
        name="g97_read_reactive_import_reply_0",
        hex="68 95 32 06 00 00 00 68 81 06 43 C4 33 33 33 33 F7 16",
        source=f"{_KTS}:60-72",
        note="Captured answer: '43 C4 -0x33 => 10 91', '33 33 33 33 -0x33 => 00 00 00 00 = 0 kvar' "
             "(the log writes kvar; the register is energy, kvarh). Value written here with the "
             "XXXXXX.XX format's two decimals.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "9110", "values": ["0.00"]},
    ),
    GoldenFrame(
        name="g97_read_export_energy_reply_0",
        hex="68 95 32 06 00 00 00 68 81 06 53 C3 33 33 33 33 06 16",
        source=f"{_KTS}:76-93",
        note="'Reverse active energy': '53 C3 -0x33 => 20 90', '00 00 00 00 = 0.0 kWh'.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "9020", "values": ["0.00"], "unit": "kWh"},
    ),
    GoldenFrame(
        name="g97_read_import_energy_reply_0_15",
        hex="68 95 32 06 00 00 00 68 81 06 43 C3 48 33 33 33 0B 16",
        source=f"{_KTS}:110-122",
        note="'Positive active energy': address 063295, 81 = response, '48 33 33 33 -0x33 => 00 00 00 15 = "
             "0.15 kWh'.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "error": None, "more_follows": False, "di": "9010",
                  "values": ["0.15"], "unit": "kWh"},
    ),
    GoldenFrame(
        name="g97_read_import_energy_reply_0_26",
        hex="68 95 32 06 00 00 00 68 81 06 43 C3 59 33 33 33 1C 16",
        source=f"{_KTS}:125-128",
        note="'59 33 33 33 -0x33 => 00 00 00 26  0.26 kWh'.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "9010", "values": ["0.26"], "unit": "kWh"},
    ),
    GoldenFrame(
        name="g97_read_di_9000_reply_vendor",
        hex="68 95 32 06 00 00 00 68 81 06 33 C3 6B 33 33 33 1E 16",
        source=f"{_KTS}:214-220",
        note="A DTSD22 answered a read of DI 9000 ('33 C3 -0x33 => 00 90') with '00 00 00.38 kWh'. "
             "DL/T 645-1997 defines 9010 (positive active total) but no 9000 (DI0 high nibble 0 names no "
             "direction), so only the structure is pinned here; the value is the vendor's extension.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "9000"},
    ),
    GoldenFrame(
        name="g97_read_voltage_a_reply_0",
        hex="68 95 32 06 00 00 00 68 81 04 44 E9 33 33 B5 16",
        source=f"{_KTS}:223-228",
        note="'44 E9 - voltage -0x33 => 11 b6', '33 33 - 0000 V'.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "B611", "values": ["0"], "unit": "V"},
    ),
    GoldenFrame(
        name="g97_read_import_block_reply",
        hex=("68 95 32 06 00 00 00 68 81 16 52 C3 6C 33 33 33 33 33 33 33 36 33 33 33 57 33 33 33 45 33 "
             "33 33 B7 16"),
        source=f"{_KTS}:233-241",
        note="'all Total A+' block 901F ('52 C3 -0x33=> 1F 90', len 22). The log line interleaves the "
             "terminal's ASCII rendering '33336333W333E333' between the data and CS; it is left out here "
             "(those characters are not bytes of the frame). Values not stated.",
        expected={"address": "000000063295", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "901F"},
    ),
    GoldenFrame(
        name="g97_read_import_energy_reply_0_03_preamble",
        hex="FE FE FE FE 68 34 69 17 08 17 20 68 81 06 43 C3 36 33 33 33 1F 16",
        source=f"{_KTS}:244-250",
        note="DTSF22 answer (with its own FE preamble): '36 33 33 33 -0x33 => 00 00 00 03 = 0.03 kWh'.",
        expected={"address": "201708176934", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "9010", "values": ["0.03"], "unit": "kWh"},
    ),
    GoldenFrame(
        name="g97_read_date_reply",
        hex="FE FE FE FE 68 34 69 17 08 17 20 68 81 06 43 F3 39 39 3A 4C 78 16",
        source=f"{_KTS}:282-288",
        note="'table A5 c0 10 > 10C0 > 43 F3 - Date': '39 39 3A 4C -0x33 => 19 07 06 06 yyMMddww' "
             "— 2019-07-06, weekday 6 (that date was a Saturday).",
        expected={"address": "201708176934", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "C010", "values": ["2019-07-06"]},
    ),
    GoldenFrame(
        name="g97_write_date_request",
        hex="68 99 99 99 99 99 99 68 04 0a  43 F3 00 00 00 00 39 39 3A 4C   a2 16",
        source=f"{_KTS}:311-312",
        note="'write date': 1997 write-data (04H) of DI C010 to the broadcast address.",
        expected={"address": "999999999999", "control": 0x04, "function": "write_data",
                  "direction": "request", "di": "C010"},
    ),
    GoldenFrame(
        name="g97_write_error_reply",
        hex="FE FE FE FE 68 34 69 17 08 17 20 68 C4 01 37 BF 16",
        source=f"{_KTS}:313-316",
        note="'C4 - 1100 0100 response,abnormal, write data', error byte 37 (not decoded in the log; "
             "37H-33H = 04H, the password-error bit, consistent with the unscrambled all-00 password "
             "of the request).",
        expected={"address": "201708176934", "control": 0xC4, "function": "write_data",
                  "direction": "reply"},
    ),
    GoldenFrame(
        name="g97_read_voltage_c_reply",
        hex="6811110000000068810446E953352E16",
        source=f"{_CQQQQ}:37-49",
        note="TestRead: decoded with Ver1997 next to a request built for address '000000001111' and "
             "DI 0xB613 (C-phase voltage); value printed, not asserted.",
        expected={"address": "000000001111", "control": 0x81, "function": "read_data",
                  "direction": "reply", "di": "B613"},
    ),
)


ERRATA: tuple[Erratum, ...] = (
    Erratum(
        name="kts_checksum_copied_from_other_address",
        hex="FE FE  68 99 99 99 99 99 99 68 01 02 43 C3 E0 16",
        source=f"{_KTS}:143",
        problem="CS E0 is the checksum of the same read sent to address 42 36 00 00 86 09 (line 97). For "
                "the 99..99 address the sum of 68..C3 mod 256 is 6F (as the log itself shows on line 100).",
        rejects=True,
    ),
    Erratum(
        name="kts_2007_read_without_33h",
        hex="68 95 32 06 00 00 00 68 11 04 00 01 00 00 B4 16",
        source=f"{_KTS}:174-176",
        problem="Data field 00 01 00 00 is the DI without the +33H scrambling (should be 33 34 33 33 for DI "
                "00000100, or 33 33 34 33 for 00010000), and CS B4 is off by one: 68+95+32+06+68+11+04+01 "
                "= 1B3 → B3. The log notes 'no answer'.",
        rejects=True,
    ),
    Erratum(
        name="kts_energy_0_36_annotated_0_54",
        hex="68 95 32 06 00 00 00 68 81 06 43 C3 69 33 33 33 2C 16",
        source=f"{_KTS}:138-140",
        problem="Annotated '69 33 33 33 -0x33 => 00 00 00 36 = 0.54 kWh': the data is BCD, so 36 is 0.36 "
                "kWh; 0.54 is 0x36 read as binary (54).",
        rejects=False,
        corrected={"address": "000000063295", "control": 0x81, "di": "9010", "values": ["0.36"],
                   "unit": "kWh"},
    ),
    Erratum(
        name="kts_time_seconds_off_by_one",
        hex="FE FE FE FE 68 34 69 17 08 17 20 68 81 05 44 F3 37 55 55 61 16",
        source=f"{_KTS}:290-296",
        problem="Annotated '37 55 55 -0x33 => 22 22 05': 37H-33H = 04H, so the meter time (C011, hhmmss "
                "sent ss first) is 22:22:04, not 22:22:05.",
        rejects=False,
        corrected={"address": "201708176934", "control": 0x81, "di": "C011", "values": ["22:22:04"]},
    ),
    Erratum(
        name="kts_error_word_read_without_removing_33h",
        hex="68 95 32 06 00 00 00 68 C1 01 35 94 16",
        source=f"{_KTS}:146-164",
        problem="The error byte 35 is decoded bit by bit as sent ('exceed daily time period, exceed yearly "
                "time-zone, wrong password, other error'), but like every data byte it carries +33H: the "
                "error word is 35H-33H = 02H, bit D1 only — in DL/T 645-1997 'data identifier error' "
                "(the request on line 146 sent a 1997 read whose four data bytes 00 01 00 00 lack +33H, so "
                "the meter saw no valid DI). The bit names listed are also the 2007 table, not the 1997 one.",
        rejects=False,
        corrected={"address": "000000063295", "control": 0xC1, "function": "read_data",
                   "direction": "reply", "error": ["bad_data_identifier"]},
    ),
    Erratum(
        name="kts_error_word_34_is_not_password",
        hex="FE FE FE FE 68 34 69 17 08 17 20 68 C4 01 34 BC 16",
        source=f"{_KTS}:318-322",
        problem="Annotated '34 - 0011 0100 - wrong password': 34H-33H = 01H, bit D0, which DL/T 645-1997 "
                "calls illegal data. (This second write sent password 33 33 33 33 = 00000000; the first, "
                "with unscrambled 00 00 00 00, drew 37H-33H = 04H, the real password error.)",
        rejects=False,
        corrected={"address": "201708176934", "control": 0xC4, "function": "write_data",
                   "direction": "reply", "error": ["illegal_data"]},
    ),
    Erratum(
        name="heyuan_decoded_reply_shows_control_01",
        hex="68 03 00 00 00 00 00 68 81 04 44 E9 33 34 EC 16",
        source=_HEYUAN,
        problem="The 'Message after Decreasing 33H' line prints '... 68 01 04 11 B6 00 01 EC 16', turning "
                "the control byte 81 into 01; removing 33H touches only the data field. The raw frame and "
                "the manual's field list ('Control Code: 81H') are right, so the raw frame is also in GOLDEN.",
        rejects=False,
        corrected={"control": 0x81, "direction": "reply", "di": "B611", "values": ["100"]},
    ),
    Erratum(
        name="jwangyaxin_unscrambled_di_and_borrowed_checksum",
        hex="FE FE 68 18 46 25 44 00 00 68 01 02 11 B6 03 16",
        source=f"{_JWANG}:39 (commented-out tx_frame, published as a Python list)",
        problem="DI B611 is written unscrambled (11 B6; on the wire it is 44 E9) and CS 03 is the checksum "
                "of the Heyuan manual's frame for address 03 00 00 00 00 00 — for this address the sum "
                "is 61 with 11 B6 and C7 with 44 E9.",
        rejects=True,
    ),
    Erratum(
        name="peace0phmind_1997_read_with_2007_control",
        hex="68 67 45 23 01 00 00 68 11 02 44 E9 E0 16",
        source=f"{_PEACE}:169-175",
        problem="The PV1997 read frame uses control 11H (the 2007 read code) with a 2-byte 1997 DI; "
                "DL/T 645-1997 reads with control 01H, and a 2007 11H read needs a 4-byte DI. Checksum is "
                "consistent, but no edition of the standard has this frame.",
        rejects=True,
    ),
    Erratum(
        name="johngai19_error_word_0xfe",
        hex="FE FE FE FE 68 43 10 00 11 34 00 68 D1 01 31 6B 16",
        source=f"{_JOHNGAI_PARSER}:71-85",
        problem="Test expects errCode '31' — the byte as sent. Removing 33H gives error word FEH, which "
                "sets reserved bit D7 and six error bits at once: a synthetic fixture, not a meter's "
                "answer. Only its structure is usable.",
        rejects=False,
        corrected={"address": "003411001043", "control": 0xD1, "function": "read_data",
                   "direction": "reply"},
    ),
    Erratum(
        name="greensea_baud_word_without_33h",
        hex="68 01 00 12 01 19 20 68 17 01 08 3D 16",
        source=f"{_GREENSEA}:175-179",
        problem="The author's first attempt (the source marks the next line as '正确协议'): rate word 08H "
                "sent without +33H, so a meter reads D5H, which sets several rate bits and names no "
                "single speed.",
        rejects=True,
    ),
)
