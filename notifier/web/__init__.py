"""Web pages: the status page and the OAuth2 pages; no business logic lives here."""
