"""A bare protocol client for server tests: speaks the wire exactly as docs/protocol.md says,
independent of sync/client, so the server is held to the text and not to our own engine."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared_schema.messages import token_message
from sync.hlc import HybridClock

PROTOCOL = {"Sync-Protocol": "1"}


class WireDevice:
    """An enrolled device: keeps a key, a token, a cursor and the records it pulled."""

    def __init__(self, client: httpx.Client, *, msgpack: bool = False):
        self.client = client
        self.msgpack = msgpack
        self.key = Ed25519PrivateKey.generate()
        self.device_id: str | None = None
        self.token: str | None = None
        self.cursor: str | None = None
        self.records: dict[str, dict] = {}
        self.clock: HybridClock | None = None
        self.enrollment: dict | None = None

    # --- raw calls -----------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True, headers: dict | None = None,
             **kwargs: Any) -> httpx.Response:
        all_headers = dict(PROTOCOL)
        if auth and self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            if self.msgpack:
                kwargs["content"] = msgspec.msgpack.encode(body)
                all_headers["Content-Type"] = "application/msgpack"
            else:
                kwargs["content"] = msgspec.json.encode(body)
                all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        return self.client.request(method, path, headers=all_headers, **kwargs)

    def decode(self, response: httpx.Response) -> Any:
        if response.headers.get("content-type", "").startswith("application/msgpack"):
            return msgspec.msgpack.decode(response.content)
        return response.json()

    # --- protocol steps ------------------------------------------------------------------

    def public_key_b64(self) -> str:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def enroll(self, code: str) -> dict:
        response = self.call("POST", "/v1/devices/enroll",
                             {"code": code, "public_key": self.public_key_b64(), "label": "test phone",
                              "app_version": "test-1"}, auth=False)
        assert response.status_code == 201, response.text
        self.enrollment = self.decode(response)
        self.device_id = self.enrollment["device_id"]
        self.clock = HybridClock(node=self.device_id)
        return self.enrollment

    def sign_in(self) -> str:
        challenge = self.call("POST", "/v1/auth/challenge", {"device_id": self.device_id}, auth=False)
        assert challenge.status_code == 200, challenge.text
        nonce = self.decode(challenge)["nonce"]
        signature = base64.b64encode(self.key.sign(token_message(self.device_id, nonce))).decode()
        response = self.call("POST", "/v1/auth/token",
                             {"device_id": self.device_id, "nonce": nonce, "signature": signature}, auth=False)
        assert response.status_code == 200, response.text
        self.token = self.decode(response)["access_token"]
        return self.token

    def mutation(self, entity: str, record_id: str | None = None, fields: dict | None = None, *,
                 op: str = "upsert", base_version: int | None = None) -> dict:
        record_id = record_id or str(uuid.uuid4())
        if base_version is None:
            base_version = self.records.get(record_id, {}).get("version", 0)
        return {"mid": str(uuid.uuid4()), "entity": entity, "id": record_id, "op": op,
                "base_version": base_version, "hlc": self.clock.now(), "fields": fields or {}}

    def push(self, mutations: list[dict], *, expect: int = 200) -> dict:
        response = self.call("POST", "/v1/sync/push", {"mutations": mutations})
        assert response.status_code == expect, response.text
        reply = self.decode(response)
        if expect == 200:
            self.clock.observe_server_time(reply["server_time"])
            for result in reply["results"]:
                if "record" in result:
                    record = result["record"]
                    self.records[record["id"]] = record
        return reply

    def pull_all(self, limit: int = 500) -> list[dict]:
        """Pull until ``more`` is false; returns every change received."""
        received = []
        while True:
            params = {"limit": str(limit)}
            if self.cursor:
                params["cursor"] = self.cursor
            response = self.call("GET", "/v1/sync/pull", params=params)
            assert response.status_code == 200, response.text
            page = self.decode(response)
            for record in page["changes"]:
                received.append(record)
                self.clock.observe(record["hlc"])
                if record["deleted"] and record["id"] in self.records and not record["fields"]:
                    self.records[record["id"]] = record
                else:
                    self.records[record["id"]] = record
            self.cursor = page["cursor"]
            if not page["more"]:
                return received

    def grid_ids(self) -> list[str]:
        return [g["id"] for g in self.enrollment["grids"]]
