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


def test_a_forked_child_draws_its_own_ids() -> None:
    import os

    import pytest

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    new_request_id()  # the parent's pool now holds unused ids
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(w, new_request_id().encode())
        os._exit(0)
    os.close(w)
    child_id = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child_id and child_id != new_request_id()
