"""Front ends: the ``medsr`` command, the demo, the background process the Slicer module drives, and the MRML
adapter (the only code that knows Slicer)."""
