"""Microcontroller path: TFLite Micro verification, measured tensor arena, C/C++ export, MCUboot images.

Host-side tooling; devices never import it.
"""
