"""The one place every edge-sdk error comes from.

Every error the library raises on purpose is an :class:`EdgeSDKError`. The
subclasses carry the structured fields a caller (or the CLI) needs to act on
the failure, and their message quotes the offending value and says what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


class EdgeSDKError(Exception):
    """Base class of every error edge-sdk raises on purpose."""


class ProfileError(EdgeSDKError):
    """A device profile file is missing, unreadable or invalid.

    ``path`` is the profile file (or the name that was looked up), ``key`` the
    dotted key that is wrong (``None`` when the whole file is at fault) and
    ``reason`` what was expected.
    """

    def __init__(self, path: str | Path, reason: str, key: str | None = None) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = f"{self.path}: key {key!r}: " if key else f"{self.path}: "
        super().__init__(where + reason)


class ProfileNotFoundError(ProfileError):
    """No profile with the given name exists in the searched directories."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        listing = ", ".join(self.known) if self.known else "none"
        super().__init__(
            name,
            f"no device profile named {name!r}; known profiles: {listing}. "
            "Pass a path to a profile TOML file or add its directory to EDGE_SDK_PROFILES_PATH.",
        )


class ProfileMismatchError(EdgeSDKError):
    """A bundle was built for another device profile than the one it is opened for."""

    def __init__(self, path: str | Path, bundle_profile: str, device_profile: str) -> None:
        self.path = str(path)
        self.bundle_profile = bundle_profile
        self.device_profile = device_profile
        super().__init__(
            f"{self.path}: bundle was built for profile {bundle_profile!r} but this device is "
            f"{device_profile!r}; package the model for {device_profile!r} instead"
        )


class BundleError(EdgeSDKError):
    """A bundle could not be written or read."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class BundleVerificationError(BundleError):
    """A bundle failed verification: corrupt, truncated, tampered, unsigned or hostile."""


class SignatureError(BundleVerificationError):
    """The bundle's signature is missing, malformed or made by an untrusted key."""


class SigningKeyError(EdgeSDKError):
    """A signing or trusted key file is missing, unreadable, malformed or would be overwritten."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingDependencyError(EdgeSDKError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        self.purpose = purpose
        super().__init__(
            f"{purpose} needs the {package!r} package, which is not installed; "
            f"install it with: pip install 'edge-deploy-sdk[{extra}]'"
        )


class EngineError(EdgeSDKError):
    """An inference engine could not load or run a model (missing delegate, bad model, crash)."""

    def __init__(self, engine: str, reason: str) -> None:
        self.engine = engine
        self.reason = reason
        super().__init__(f"{engine}: {reason}")
