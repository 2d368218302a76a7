"""Private implementation of gradcheck_kit. Import from :mod:`gradcheck_kit` instead."""
