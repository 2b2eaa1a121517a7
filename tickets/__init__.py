"""The hotline ticket queue behind 0591-62623959: a plain package (no Rasa), SQLite or PostgreSQL.

    service: create_or_get, open_for, claim (one guarded UPDATE), unclaim, resolve, notes,
             callback phone (sealed; audited reveal), rating, queue place and expected wait,
             every change one ticket_events row (and one outbox row when forwarding is on)
    forwarding: the outbox relay that pushes tickets and their updates to the hotline's own
             system (HMAC-signed webhook, retries with backoff), off unless configured
    stats: the hotline figures (`python -m tickets report`, GET /api/v1/admin/stats)
"""
