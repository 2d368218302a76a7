"""The pytest plugin of gradcheck_kit (entry point ``gradcheck``: :mod:`.plugin`).

Loaded automatically by pytest once gradcheck_kit is installed; nothing here
imports torch.
"""
