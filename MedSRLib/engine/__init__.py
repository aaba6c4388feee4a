"""The inference engine: runs a network over a volume in windows or slices, on a chosen device, within a memory
budget, with progress and cancel."""
