"""The reference consumer on the other side of the broker (``edge-central``, DESIGN §9).

Billing and CRM stand here: workers on one MQTT 5 shared subscription decode and check every
payload (:mod:`.decoding`, the one place that knows the payload format), verify signed command
results, store batches idempotently — dedupe by (gateway, epoch, seq), corrections by ``rev`` —
in SQLite or PostgreSQL (:mod:`.storage`), find gaps in each gateway's durable sequence
(:mod:`.streams`) and ask the gateway to send them again with a signed ``replay`` command
(:mod:`.replay`). ``status``, the NEM12 export (:mod:`.nem12`) and the outage feed read the
database. It imports ``protocols`` only, never the gateway: it is what someone else's system
would be, built on the published contracts.
"""
