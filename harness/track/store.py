"""Tracking URIs, parsed in one place: which kind of store a URI names, its SQLite file, the form
a read command opens, and how messages and reports name it (never with credentials).

Kinds: `sqlite` (`sqlite:///PATH[?options]`, or the read-only form `read_only` writes), `server`
(`http://` / `https://`: an `mlflow server`), `postgresql` (`postgresql[+driver]://`), `file` (a
folder or `file:` URI: MLflow 3's refused file store), `other` (anything else MLflow may accept). Credentials are moved out of a URI before it gets here
(`mlflow_tracker.credentials_to_environment`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_SQLITE = "sqlite:///"
_READ_ONLY = "sqlite+pysqlite:///file:"


def kind(uri: str) -> str:
    if uri.startswith((_SQLITE, _READ_ONLY)):
        return "sqlite"
    if uri.startswith(("http://", "https://")):
        return "server"
    if uri.startswith(("postgresql:", "postgresql+")):
        return "postgresql"
    if uri.startswith("file:") or "://" not in uri:
        return "file"
    return "other"


def sqlite_uri(path: str | Path) -> str:
    """The URI of a SQLite store at `path` (made absolute)."""
    return f"{_SQLITE}{Path(path).resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite URI (plain, with options, or read-only); None otherwise."""
    if uri.startswith(_READ_ONLY):
        return Path(unquote(uri[len(_READ_ONLY):].split("?", 1)[0]))
    if uri.startswith(_SQLITE):
        return Path(uri[len(_SQLITE):].partition("?")[0])
    return None


def has_options(uri: str) -> bool:
    """A plain SQLite URI with `?options`: left to MLflow as given."""
    return uri.startswith(_SQLITE) and "?" in uri


def read_only(uri: str) -> str:
    """The URI a read command opens: a SQLite store read-only (SQLite refuses every write, and
    MLflow cannot create or migrate anything); other stores as given."""
    if uri.startswith(_SQLITE) and not has_options(uri):
        path = Path(uri[len(_SQLITE):]).resolve()
        # the driver-qualified scheme also keeps MLflow from creating the "parent folder" of
        # the file: URI (relative to the current directory)
        return f"{_READ_ONLY}{quote(str(path))}?mode=ro&uri=true"
    return uri


def display(uri: str) -> str:
    """A store as error messages name it: a SQLite file by its path, others without credentials."""
    path = sqlite_file(uri)
    if path is not None:
        return str(path)
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def without_credentials(uri: str) -> str:
    """The URI with its user and password masked (`***@host`), as a command line may show it."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def short(uri: str) -> str:
    """A store's name for a report: no credentials, no machine-specific directories."""
    path = sqlite_file(uri)
    if path is not None:
        return f"sqlite: {path.parent.name}/{path.name}"
    return display(uri)


__all__ = ["display", "has_options", "kind", "read_only", "short", "sqlite_file", "sqlite_uri", "without_credentials"]
