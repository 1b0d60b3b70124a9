"""Who may write: API keys with scopes (``keys``)."""
