"""Every error relaywatch reports to a user.

RelaywatchError            a message for the user; the CLI prints it and exits 1
 ├── ConfigError           the configuration file or environment is wrong
 ├── InputError            a log file or argument cannot be used
 ├── DatabaseError         the database cannot be reached
 │    └── SchemaError      … or is not at the schema revision this version needs
 ├── NotFound              the thing asked for does not exist (HTTP 404)
 └── MailError             the SMTP server did not take the report
"""

from __future__ import annotations


class RelaywatchError(Exception):
    """An error whose message is written for the mail administrator."""

    status_code = 500


class ConfigError(RelaywatchError):
    status_code = 500


class InputError(RelaywatchError):
    status_code = 400


class DatabaseError(RelaywatchError):
    status_code = 503


class SchemaError(DatabaseError):
    pass


class NotFound(RelaywatchError):
    status_code = 404


class MailError(RelaywatchError):
    """The report could not be handed to the SMTP server."""

    status_code = 502
