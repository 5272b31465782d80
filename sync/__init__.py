"""FieldLoop's sync library: clock, merge, and the device's engine. Framework-free.

Imports shared_schema, the standard library and a few well-kept libraries (urllib3 for the
device's transport, cryptography for signatures); never Litestar or Kivy.
"""
