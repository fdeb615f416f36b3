"""Finding device profiles: built-ins, user directories, and the search path between them.

A name such as ``raspberry-pi-4`` is looked up as ``<dir>/raspberry-pi-4.toml``
in, first to last:

1. the ``search_dirs`` the caller passes (e.g. the CLI's ``--profiles-dir``);
2. the directories in ``EDGE_SDK_PROFILES_PATH`` (``os.pathsep``-separated);
3. the built-in profiles shipped in this package.

The first hit wins, so a user file overrides the built-in profile of the same
id. Inside a profiles directory a file must be named ``<id>.toml`` (otherwise a
lookup by name could return a profile with another id); a file loaded by path
(:func:`validate_file`, or :func:`load_profile` with a path) may have any name.

Directories passed in ``search_dirs`` must exist; directories named in the
environment variable that do not exist are skipped, as ``PATH`` entries are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from device_profiles.schema import DeviceProfile
from edge_sdk.errors import ProfileError, ProfileNotFoundError

__all__ = [
    "PROFILES_PATH_ENV",
    "builtin_profiles_dir",
    "profile_search_path",
    "load_profile",
    "list_profiles",
    "validate_file",
]

#: Environment variable naming extra profile directories, ``os.pathsep``-separated.
PROFILES_PATH_ENV = "EDGE_SDK_PROFILES_PATH"

PathArg = str | os.PathLike[str]


def builtin_profiles_dir() -> Path:
    """The directory holding the profiles shipped with edge-sdk."""
    return Path(__file__).resolve().parent


def profile_search_path(search_dirs: Sequence[PathArg] = ()) -> list[Path]:
    """The directories searched for profiles, highest precedence first.

    ``search_dirs`` come first and must be existing directories; then the
    existing directories named in ``EDGE_SDK_PROFILES_PATH``; the built-in
    directory last. A directory that appears twice is kept at its first place.
    """
    if isinstance(search_dirs, (str, os.PathLike)):
        search_dirs = [search_dirs]  # a lone path, not a sequence of one-letter paths
    dirs: list[Path] = []
    for entry in search_dirs:
        path = Path(entry).expanduser()
        if not path.is_dir():
            reason = "does not exist" if not path.exists() else "is not a directory"
            raise ProfileError(path, f"profiles directory {reason}")
        dirs.append(path)
    for entry in os.environ.get(PROFILES_PATH_ENV, "").split(os.pathsep):
        if entry.strip():
            path = Path(entry).expanduser()
            if path.is_dir():
                dirs.append(path)
    dirs.append(builtin_profiles_dir())
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in dirs:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def validate_file(path: PathArg) -> DeviceProfile:
    """Read and fully validate one profile file, whatever its name; raise ProfileError if it is invalid."""
    return DeviceProfile.from_file(path)


def load_profile(name_or_path: PathArg, search_dirs: Sequence[PathArg] = ()) -> DeviceProfile:
    """Load a profile by id (searched for, see :func:`profile_search_path`) or by path.

    A ``PathLike``, or a string that contains a path separator or ends in
    ``.toml``, is a path and is loaded directly. Anything else is an id;
    when no directory holds ``<id>.toml`` this raises ProfileNotFoundError
    listing the ids that do exist.
    """
    if _is_path(name_or_path):
        return DeviceProfile.from_file(name_or_path)
    name = str(name_or_path)
    dirs = profile_search_path(search_dirs)
    for directory in dirs:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return _load_from_directory(candidate)
    raise ProfileNotFoundError(name, sorted(_stems(dirs)))


def list_profiles(search_dirs: Sequence[PathArg] = ()) -> list[DeviceProfile]:
    """Every profile on the search path, sorted by id; a user file shadows the built-in of the same id.

    Every file that is not shadowed is loaded and validated, so one broken
    file raises ProfileError naming it.
    """
    chosen: dict[str, Path] = {}
    for directory in profile_search_path(search_dirs):
        for candidate in sorted(directory.glob("*.toml")):
            if candidate.is_file():
                chosen.setdefault(candidate.stem, candidate)
    return [_load_from_directory(chosen[stem]) for stem in sorted(chosen)]


def _is_path(value: PathArg) -> bool:
    if not isinstance(value, str):
        return True
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return value.endswith(".toml") or any(sep in value for sep in separators)


def _stems(dirs: Sequence[Path]) -> set[str]:
    return {p.stem for d in dirs for p in d.glob("*.toml") if p.is_file()}


def _load_from_directory(path: Path) -> DeviceProfile:
    profile = DeviceProfile.from_file(path)
    if profile.id != path.stem:
        raise ProfileError(
            path,
            f"id {profile.id!r} does not match the file name; a profile in a profiles directory "
            f"must be named <id>.toml, so rename the file to {profile.id}.toml or set id = {path.stem!r}",
            key="id",
        )
    return profile
