"""CPU vs CUDA, one room a job: :mod:`.benchmark` times, :mod:`.parity` compares.

What both need (devices, skip reasons, one device's copy of the module and the
inputs) is in :mod:`.common`. The public names are imported from the module that
defines them (``gradcheck_kit``'s lazy table points there).
"""
