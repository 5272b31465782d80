"""The /v1 HTTP API: enrollment, tokens, push, pull, blobs."""
