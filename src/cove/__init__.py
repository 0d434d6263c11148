"""cove: declarative system containers on systemd-nspawn."""

__version__ = "0.1.0"
