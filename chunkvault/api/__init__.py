"""The HTTP API: routes only translate between HTTP and :class:`ApiBackend`; no business
logic lives here."""
