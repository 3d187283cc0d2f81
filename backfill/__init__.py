"""Backfill: insert what D1 lacks, built from the normalised KV records of the diff's findings.

- `backfill.plan` turns `missing_in_d1` / `expiring_soon` findings into `JobPlan`s: one KV
  record's missing rows, each inserted only when its natural key is absent;
- `backfill.packing` packs the rows of many jobs into multi-row guarded inserts, as full as
  D1's limits allow, and the jobs into batches (one request, one transaction each);
- `backfill.apply` runs the batches against a `D1Source` and resumes an interrupted run;
  `backfill.ledger` keeps the run ledger; `backfill.lookup` finds the rows a batch inserted
  and reconciles a killed run; `backfill.revert` reverts a run;
- `backfill.sqlfile` writes the same guarded inserts as a SQL file for `wrangler d1 execute`.

Nothing here ever replaces, updates or deletes a row, except `--revert`, which deletes exactly
the rows one run inserted.
"""

from __future__ import annotations
