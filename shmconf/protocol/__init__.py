"""The shared-memory format, in one home.

=========== =====================================================================
layout      offsets, sizes, magic, the layout version and the object names
block       a POSIX shared-memory object: create, attach (owner, mode, size checks)
anchor      the fixed header: generation, data serial, publisher pid, heartbeat
slot        data segments and their two slots: write (W1-W3), verified read (R3-R6)
table       the reader table: which process holds which generation
control     the publisher's status and request files, private file helpers
=========== =====================================================================

``docs/design.md`` explains the protocol; ``writer.py`` and ``reader.py``
drive it.
"""
