"""tegrastats lines as real Jetsons printed them, across L4T releases.

Sources (recorded lines, copied verbatim):
- DataDog/datadog-agent, pkg/collector/corechecks/nvidia/jetson/jetson_test.go: the Nano (r32),
  Orin NX 16GB (r35, first release printing mW units) and AGX Orin (r36) samples.
- NVIDIA L4T r32.5 developer guide, "tegrastats Utility": the RAM example of its table.
- public Jetson Orin Nano logs found with code search (repositories not identified): the
  timestamped r36 line and the newer line with min/max columns and no SWAP field.
"""

import pytest

from edgekv.tools.tegrastats import parse_line

R32_NANO = ("RAM 534/3964MB (lfb 98x4MB) SWAP 5/1982MB (cached 1MB) IRAM 0/252kB(lfb 252kB) "
            "CPU [16%@204,9%@204,0%@204,0%@204] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@34C "
            "CPU@36.5C PMIC@100C GPU@36C AO@39.5C thermal@36.25C POM_5V_IN 1022/1022 "
            "POM_5V_GPU 0/0 POM_5V_CPU 204/204")
R32_DOC_RAM = "RAM 220/38955MB (lfb 847x4MB) SWAP 0/1978MB (cached 0MB)"
R35_ORIN_NX = ("RAM 6334/15388MB (lfb 1770x4MB) SWAP 491/7694MB (cached 0MB) "
               "CPU [6%@729,9%@729,5%@729,16%@729,off,off,off,off] EMC_FREQ 0%@2133 "
               "GR3D_FREQ 0%@611 VIC_FREQ 729 APE 174 CV0@45.812C CPU@47.937C SOC2@46.093C "
               "SOC0@46.968C CV1@46.406C GPU@45.875C tj@48.875C SOC1@48.875C CV2@45.75C "
               "VDD_IN 5299mW/5299mW VDD_CPU_GPU_CV 773mW/773mW VDD_SOC 1424mW/1424mW")
R36_AGX_ORIN = ("RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) "
                "CPU [3%@729,4%@729,0%@729,1%@729,0%@2201,100%@2201,1%@2201,0%@2201,100%@2201,"
                "0%@2201,0%@2201,0%@2201] EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] NVENC      off "
                " NVDEC    off NVJPG off NVJPG1    off         VIC        off          OFA      "
                "     off          NVDLA0    off       NVDLA1     off          PVA0_FREQ off    "
                "     APE           174        cpu@53.062C soc2@48.25C soc0@48.843C  "
                "gpu@47.812C tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW "
                "VDD_CPU_CV 4405mW/4405mW VIN_SYS_5V0 4767mW/4767mW")
R36_AGX_ORIN_64 = ("RAM 2448/62840MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) "
                   "CPU [0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,"
                   "0%@2201,0%@2201,0%@2201,0%@2201] GR3D_FREQ 0% cpu@42C soc2@37.843C "
                   "soc0@39.187C gpu@37.75C tj@42C soc1@37.937C VDD_GPU_SOC 4940mW/4940mW "
                   "VDD_CPU_CV 988mW/988mW VIN_SYS_5V0 4442mW/4442mW")
R36_ORIN_NANO = ("09-21-2025 15:38:17 RAM 3645/7620MB (lfb 63x4MB) SWAP 236/3810MB (cached 0MB) "
                 "CPU [1%@729,1%@729,4%@729,1%@729,0%@729,0%@729] EMC_FREQ 0%@204 "
                 "GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 "
                 "cpu@44.125C soc2@43.375C soc0@42.125C gpu@44.531C tj@44.531C soc1@43.156C "
                 "VDD_IN 2957mW/2957mW VDD_CPU_GPU_CV 486mW/486mW VDD_SOC 1012mW/1012mW")
ORIN_MIN_MAX = ("09-19-2026 13:33:02 RAM 2850/7486MB (lfb 33x4MB) "
                "CPU [2%@729,0%@729,0%@729,0%@729,1%@729,0%@729] EMC_FREQ 5%@665 "
                "GR3D_FREQ 0%@[305] NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off APE 200 "
                "cpu@45.812C/45.812C soc2@44.843C/44.843C soc0@46.093C/46.093C "
                "gpu@46.843C/46.843C tj@46.843C/46.843C soc1@46.281C/46.281C "
                "VDD_IN 3582mW/3582mW/3582mW VDD_CPU_GPU_CV 523mW/523mW/523mW "
                "VDD_SOC 1127mW/1127mW/1127mW")


@pytest.mark.parametrize(("line", "used", "total", "swap", "gpu", "mhz"), [
    (R32_NANO, 534, 3964, (5, 1982), 0, [76]),
    (R32_DOC_RAM, 220, 38955, (0, 1978), None, []),
    (R35_ORIN_NX, 6334, 15388, (491, 7694), 0, [611]),
    (R36_AGX_ORIN, 29114, 30697, (4915, 15348), 0, [305, 305]),
    (R36_AGX_ORIN_64, 2448, 62840, (0, 31420), 0, []),
    (R36_ORIN_NANO, 3645, 7620, (236, 3810), 0, [305]),
    (ORIN_MIN_MAX, 2850, 7486, (None, None), 0, [305]),
])
def test_memory_and_gpu_fields_of_every_release(line, used, total, swap, gpu, mhz):
    s = parse_line(line)
    assert (s.ram_used_mb, s.ram_total_mb) == (used, total)
    assert (s.swap_used_mb, s.swap_total_mb) == swap
    assert s.gpu_load_percent == gpu
    assert s.gpu_mhz == mhz


def test_power_rails_in_both_unit_styles_and_never_ram_or_swap():
    assert parse_line(R32_NANO).power_mw == {"POM_5V_IN": 1022, "POM_5V_GPU": 0, "POM_5V_CPU": 204}
    assert parse_line(R35_ORIN_NX).power_mw == {"VDD_IN": 5299, "VDD_CPU_GPU_CV": 773,
                                                "VDD_SOC": 1424}
    assert parse_line(R36_AGX_ORIN).power_mw == {"VDD_GPU_SOC": 3205, "VDD_CPU_CV": 4405,
                                                 "VIN_SYS_5V0": 4767}
    assert parse_line(ORIN_MIN_MAX).power_mw == {"VDD_IN": 3582, "VDD_CPU_GPU_CV": 523,
                                                 "VDD_SOC": 1127}


def test_temperatures_and_timestamp():
    nano = parse_line(R36_ORIN_NANO)
    assert nano.timestamp == "09-21-2025 15:38:17"
    assert nano.temps_c["gpu"] == 44.531 and nano.temps_c["tj"] == 44.531
    assert parse_line(R32_NANO).timestamp is None
    assert parse_line(R32_NANO).temps_c["PMIC"] == 100.0
    assert parse_line(ORIN_MIN_MAX).temps_c["cpu"] == 45.812


def test_units_are_read_not_assumed():
    # A synthetic line (the one place here): the unit letter decides, MB is not taken for granted.
    assert parse_line("RAM 2048/4096kB (lfb 1x512kB)").ram_total_mb == 4.0


def test_a_line_without_ram_is_rejected():
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_line("CPU [1%@102,5%@102,0%@102,0%@102] EMC_FREQ 0%@204")
