"""OAuth2 for SMTP: grants, client authentication, provider modes, token store and provider.

Arrows point mail -> oauth2: nothing here imports the mail package. The SMTP sender calls an
`AccountTokenProvider` (structurally `notifier.mail.tokens.TokenProvider`).
"""

from notifier.oauth2.errors import (
    AuthorizationFlowError,
    ModeError,
    NeedsAuthorization,
    OAuth2Error,
    OAuth2StoreError,
    TokenEndpointError,
    TokenStoreUnavailable,
    TokenUnavailable,
)
from notifier.oauth2.filestore import FileTokenStore
from notifier.oauth2.flows import AuthorizationFlows
from notifier.oauth2.modes import ModeSpec, resolve_mode, validate_mode
from notifier.oauth2.provider import AccountTokenProvider, provider_for_account
from notifier.oauth2.store import StoredTokens, TokenStore, copy_tokens

__all__ = [
    "AccountTokenProvider",
    "AuthorizationFlowError",
    "AuthorizationFlows",
    "FileTokenStore",
    "ModeError",
    "ModeSpec",
    "NeedsAuthorization",
    "OAuth2Error",
    "OAuth2StoreError",
    "StoredTokens",
    "TokenEndpointError",
    "TokenStore",
    "TokenStoreUnavailable",
    "TokenUnavailable",
    "copy_tokens",
    "provider_for_account",
    "resolve_mode",
    "validate_mode",
]
