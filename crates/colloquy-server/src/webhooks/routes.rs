//! `GET /v0/evi/webhook_deliveries` and `POST /v0/evi/webhook_deliveries/{id}/retry`.
