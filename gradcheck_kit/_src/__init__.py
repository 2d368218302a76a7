"""Private implementation of gradcheck_kit. Import from :mod:`gradcheck_kit` instead."""

# Every result's summary() takes its text from messages.py, which registers it on import;
# results.py never imports messages (their types are only annotations there), so the
# package loads it once, before any result can exist.
from . import messages as messages
