"""edge: the clinic-side AI screening mammography appliance."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
