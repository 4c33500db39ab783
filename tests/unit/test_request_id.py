"""Request ids made without a system call each: still RFC 4122 version-4 UUIDs, all distinct."""

from __future__ import annotations

import uuid

from llm_gateway.middleware.request_id import new_request_id, usable_request_id


def test_new_request_ids_are_distinct_uuid4_strings() -> None:
    ids = [new_request_id() for _ in range(2000)]  # several refills of the 256-id pool
    assert len(set(ids)) == len(ids)
    for rid in ids:
        u = uuid.UUID(rid)
        assert str(u) == rid and u.version == 4 and u.variant == uuid.RFC_4122
        assert usable_request_id(rid)
