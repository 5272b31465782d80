"""Devices: enrollment codes, enrollment, challenge-response tokens, retire and revoke."""
