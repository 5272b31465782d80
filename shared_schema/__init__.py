"""The FieldLoop contract: every entity and message of sync protocol v1 as msgspec Structs.

Imports only msgspec. Both the server and the device validate with these Structs, and each
entity field declares its merge rule once, beside the field (see ``shared_schema.rules``).
"""
