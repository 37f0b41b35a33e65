"""Concurrent /layers of one organization on PostgreSQL: overlapping records and layers,
delivered in different orders, never deadlock (records.services._locked_ids)."""

import random
import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from records import services
from records.models import Layer, PendingExport, Record, Result
from tests.buildkit_oracle import descriptor, key, result, root_key, sha, store_blob

pytestmark = [
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
                       reason="row lock order is PostgreSQL's"),
    pytest.mark.usefixtures("builtin"),
]

ENGINES = 6
RECORDS = 24
LAYERS = 12


def test_overlapping_exports_at_once_neither_deadlock_nor_fail(transactional_db, org):
    services.update_records(org, None, {"CacheKeys": [key(root_key(sha(f"image {n}")), result(f"ref {n}"))
                                                      for n in range(RECORDS)], "Links": []})
    identities = sorted(Record.objects.filter(organization=org).values_list("identity", flat=True))
    assert len(identities) == RECORDS
    layers = [sha(f"layer {n}") for n in range(LAYERS)]
    for digest in layers:
        store_blob(org, digest, 7)

    def payload(seed):
        rng = random.Random(seed)
        entries = []
        for identity in rng.sample(identities, len(identities)):
            chain = rng.sample(layers, 3)
            entries.append({"RecordDigest": identity, "Layers": [descriptor(digest, 7) for digest in chain]})
        return {"UpdatedRecords": entries}

    failures = []
    for round_ in range(3):
        # Every row each export writes is due for writing again: stale last use, no result
        # yet, an export asked for.
        # Row by row in a random order, so that the table's physical order (which a
        # sequential scan locks in) is not id order.
        rng = random.Random(round_)
        old = timezone.now() - timedelta(days=2)
        for table in (Layer, Record):
            ids = list(table.objects.filter(organization=org).values_list("id", flat=True))
            for pk in rng.sample(ids, len(ids)):
                table.objects.filter(pk=pk).update(**({"last_used_at": old} if table is Layer else {"has_result": False}))
        Result.objects.filter(record__organization=org).update(complete=False)
        PendingExport.objects.bulk_create(
            [PendingExport(record=record, cache_ref_id="ref", result_created_at=timezone.now())
             for record in Record.objects.filter(organization=org)],
            ignore_conflicts=True,
        )
        start = threading.Barrier(ENGINES)

        def export(seed):
            body = payload(seed)
            with connection.cursor() as cursor:
                # As on the large tables where the deadlock was seen: rows met in table order.
                cursor.execute("SET enable_indexscan = off")
                cursor.execute("SET enable_bitmapscan = off")
            try:
                start.wait()
                answer, _refused = services.update_layers(org, None, body)
                if len(answer["Accepted"]) != RECORDS:
                    failures.append(answer["Refused"])
            except Exception as exc:  # noqa: BLE001 - reported below, with its kind
                failures.append(repr(exc))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=export, args=(round_ * 100 + n,)) for n in range(ENGINES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
    assert not PendingExport.objects.filter(record__organization=org).exists()
    assert Record.objects.filter(organization=org, has_result=True).count() == RECORDS
    assert not Layer.objects.filter(organization=org, last_used_at__lt=timezone.now() - timedelta(hours=1)).exists()
    assert connection.vendor == "postgresql"
