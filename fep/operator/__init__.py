"""The operator side: console, HTTP API and status page, metrics, notifications."""
