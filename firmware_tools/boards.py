"""What the firmware tools need to know about a board beyond its device profile: an explicit registry.

One :class:`Board` per microcontroller profile id, with the PlatformIO
``platform`` / ``board`` / ``framework`` of the generated example project and
MCUboot's flash write alignment. Sources:

- PlatformIO board manifests: ``platform-espressif32/boards/esp32-s3-devkitc-1.json``
  (frameworks: espidf), ``platform-ststm32/boards/disco_h747xi.json`` (frameworks:
  cmsis, stm32cube, libopencm3, mbed, zephyr), ``platform-nordicnrf52/boards/nano33ble.json``
  (frameworks: arduino).
- TFLite Micro for each: Espressif's ``esp-tflite-micro`` ESP-IDF component (with ESP-NN),
  the ``tflite-micro-arduino-examples`` library for Arduino Mbed boards (with CMSIS-NN), and
  for other Cortex-M boards a source tree made by tflite-micro's
  ``tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py`` with CMSIS-NN kernels.
- MCUboot ``--align``: the flash write granularity (nRF52840: 4-byte words; ESP32-S3 SPI
  flash: 4 bytes as used by MCUboot's ESP port; STM32H7: 256-bit = 32-byte flash words).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from firmware_tools.errors import FirmwareError

if TYPE_CHECKING:
    from device_profiles import DeviceProfile


@dataclass(frozen=True)
class Board:
    platform: str  # PlatformIO development platform
    board: str  # PlatformIO board id
    framework: str  # PlatformIO framework of the example project
    arduino: bool  # an Arduino-class board: the example is also a sketch (.ino)
    tflm_source: str  # how the example project gets TFLite Micro
    lib_deps: tuple[str, ...] = ()
    mcuboot_align: int = 4  # flash write alignment MCUboot's swap trailer needs
    arena_alignment: int = 16  # TFLite Micro aligns every buffer in the arena to 16 bytes (MicroArenaBufferAlignment)


BOARDS: Mapping[str, Board] = {
    "esp32-s3": Board(
        platform="espressif32", board="esp32-s3-devkitc-1", framework="espidf", arduino=False,
        tflm_source="the espressif/esp-tflite-micro ESP-IDF component (src/idf_component.yml), with ESP-NN kernels",
        mcuboot_align=4,
    ),
    "stm32h747-disco": Board(
        platform="ststm32", board="disco_h747xi", framework="mbed", arduino=False,
        tflm_source="a TFLite Micro tree in lib/tflite-micro made by tflite-micro's create_tflm_tree.py "
                    "with OPTIMIZED_KERNEL_DIR=cmsis_nn TARGET=cortex_m_generic TARGET_ARCH=cortex-m7+fp",
        mcuboot_align=32,
    ),
    "arduino-nano-33-ble": Board(
        platform="nordicnrf52", board="nano33ble", framework="arduino", arduino=True,
        tflm_source="the Arduino TensorFlow Lite library from tflite-micro-arduino-examples, with CMSIS-NN kernels",
        lib_deps=("https://github.com/tensorflow/tflite-micro-arduino-examples",),
        mcuboot_align=4,
    ),
}


#: A microcontroller profile of the user's own: C sources and main.cc, no PlatformIO project.
GENERIC = Board(platform="", board="", framework="", arduino=False,
                tflm_source="a TFLite Micro tree made by tflite-micro's create_tflm_tree.py for your target")


def board_for(profile: "DeviceProfile") -> Board:
    """The board of a microcontroller profile (:data:`GENERIC` for one not listed); an error for other profiles."""
    if not profile.is_microcontroller:
        raise FirmwareError(profile.id, f"profile {profile.id!r} runs {profile.runtime.engine!r}, not TFLite Micro: "
                                        "firmware export is for microcontroller profiles "
                                        f"({', '.join(sorted(BOARDS))})")
    return BOARDS.get(profile.id, GENERIC)
