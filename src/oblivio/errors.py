"""The one exception type oblivio raises for bad input or failed runs."""


class OblivioError(ValueError):
    """A clear, one-line problem with the user's input or a run (never an internal bug)."""
