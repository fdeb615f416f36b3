"""Device profiles: one TOML file per target device, read into frozen dataclasses.

>>> from device_profiles import load_profile
>>> profile = load_profile("raspberry-pi-4")
>>> profile.runtime.engine, profile.runtime.quantization
('litert', 'int8')

The schema (every key, its type and what it means) is documented on the
dataclasses in :mod:`device_profiles.schema`; how names are found on disk in
:mod:`device_profiles.loader`. Nothing here imports numpy or an inference
engine.
"""

from device_profiles.loader import (
    PROFILES_PATH_ENV,
    builtin_profiles_dir,
    list_profiles,
    load_profile,
    profile_search_path,
    validate_file,
)
from device_profiles.schema import (
    CPU,
    SCHEMA_VERSION,
    Accelerator,
    Compute,
    DeviceProfile,
    Memory,
    Runtime,
)

__all__ = [
    "PROFILES_PATH_ENV",
    "SCHEMA_VERSION",
    "Accelerator",
    "CPU",
    "Compute",
    "DeviceProfile",
    "Memory",
    "Runtime",
    "builtin_profiles_dir",
    "list_profiles",
    "load_profile",
    "profile_search_path",
    "validate_file",
]
