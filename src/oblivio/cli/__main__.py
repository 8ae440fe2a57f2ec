"""``python -m oblivio.cli ...``: the same as the ``oblivio`` command."""
from . import main

main()
