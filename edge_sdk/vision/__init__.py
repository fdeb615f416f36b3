"""The vision side of the device runtime.

Pure pre- and post-processing (numpy in, values out), the result value types,
and the frame sources, sinks and threaded pipeline built on them. Importing
this package loads nothing heavy: OpenCV and the inference engines are
imported by the functions and backends that need them.
"""
