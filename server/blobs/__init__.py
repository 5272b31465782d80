"""Photos and other blobs, content-addressed by SHA-256 (protocol section 7)."""
