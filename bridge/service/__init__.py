"""The service layer: systemd notify and watchdog, journald logging, Prometheus metrics, daemon."""
