"""Where keys live on a Redis Cluster: slots, and a lease beside its entry."""

from __future__ import annotations

from redis.crc import key_slot

from memo.backends.base import LEASE_SUFFIX

__all__ = ["cluster_lease_key", "entry_of_lease", "slot_of"]


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (CRC16 of its ``{tag}``, or of the whole key)."""
    return int(key_slot(key.encode()))


def _has_hash_tag(key: str) -> bool:
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


def cluster_lease_key(key: str) -> str:
    """Where ``key``'s lease lives on a cluster: ``{key}#lease``, in the key's slot; a
    key with its own ``{tag}`` keeps ``key#lease``, which that tag places beside it."""
    if _has_hash_tag(key):
        return key + LEASE_SUFFIX
    return "{" + key + "}" + LEASE_SUFFIX


def entry_of_lease(member: str) -> str:
    """The entry a tag set's member stands for: itself, or the key whose lease it is."""
    if not member.endswith(LEASE_SUFFIX):
        return member
    bare = member[: -len(LEASE_SUFFIX)]
    if bare.startswith("{") and bare.endswith("}") and cluster_lease_key(bare[1:-1]) == member:
        return bare[1:-1]
    return bare
