"""The exception tree of federation.

Every error a user can cause derives from :class:`FederationError`; the CLI
prints its message on one line and exits non-zero. Anything else is a bug
and keeps its traceback.

    FederationError
    ├── ConfigError            bad repository/site configuration or universe
    ├── SchemaVersionError     repository written by an unknown schema version
    ├── DataIdError            data ID missing/unknown keys or values without records
    │   └── MissingRecordError a data ID names a value this repository has no record of
    ├── DimensionRecordError   conflicting dimension records
    ├── DatasetTypeError       unknown or conflicting dataset type definitions
    ├── CollectionError        unknown collections, wrong type, cycles, ownership
    ├── ConflictError          a dataset slot or UUID already holds something else
    ├── CalibrationError       overlapping validity ranges
    ├── ExpressionError        a `where` expression that does not parse or resolve
    ├── MissingDatasetError    no dataset matches a lookup
    ├── DatastoreError         file storage and formatter failures
    │   └── ChecksumError      a file does not match its recorded size/checksum
    └── InputError             a malformed input table or file given by the user
"""

from __future__ import annotations


class FederationError(Exception):
    """Root of all errors caused by user input or repository state."""


class ConfigError(FederationError):
    """Invalid configuration: repository config, universe or templates."""


class SchemaVersionError(FederationError):
    """The repository was written by a schema version this code does not know."""


class DataIdError(FederationError):
    """A data ID does not match its dimensions or names values without records."""


class MissingRecordError(DataIdError):
    """A data ID names a value this repository holds no dimension record for.

    Either the value does not exist, or (at a site holding part of the data)
    that part was never synced here. ``dimension`` and ``key`` say which record.
    """

    def __init__(self, dimension: str, key: str) -> None:
        super().__init__(f"no {dimension} record for {key}; insert dimension records first")
        self.dimension = dimension
        self.key = key


class DimensionRecordError(FederationError):
    """A dimension record conflicts with one already stored."""


class DatasetTypeError(FederationError):
    """A dataset type is unknown or conflicts with the stored definition."""


class CollectionError(FederationError):
    """A collection is unknown, of the wrong type, or would form a cycle."""


class ConflictError(FederationError):
    """A dataset collides with a different one already stored."""


class CalibrationError(FederationError):
    """Certifying would give one type + data ID two overlapping validity ranges."""


class ExpressionError(FederationError):
    """A `where` expression does not parse or names something unknown."""


class MissingDatasetError(FederationError):
    """No dataset matches a lookup."""


class DatastoreError(FederationError):
    """A file could not be stored, read or removed."""


class ChecksumError(DatastoreError):
    """A file does not match its recorded size or xxh3-128 checksum."""


class InputError(FederationError):
    """A user-supplied input file or table is malformed."""


class ReleaseError(FederationError):
    """A release is missing, exists already, or would be changed."""


class RetractedReleaseWarning(UserWarning):
    """A search uses a release that has been retracted (its data is still there)."""
