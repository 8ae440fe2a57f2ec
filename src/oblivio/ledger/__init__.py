"""The deletion-request ledger: requests, model versions, unlearning runs and audits in a database.

    from oblivio.ledger import add_request, process, certificate
    add_request("runs/model.safetensors", "ticket-42", indices=[5, 17], reason="GDPR art. 17")
    process("runs/model.safetensors", method="dm")
    certificate("ticket-42")

Needs SQLAlchemy and Alembic (imported only when the ledger is used).
"""
