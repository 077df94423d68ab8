"""Client-side TLS for forwards (syslog over TLS, https:// URLs), built from the settings."""

from __future__ import annotations

import ssl

from notifier.config import ForwardSettings


def client_context(forward: ForwardSettings) -> ssl.SSLContext:
    """A TLS 1.2+ client context: the system CAs (or `ca_file`), a client certificate when one is
    set, no verification when `tls_verify` is false.

    Raises ValueError naming the forward, the file and the way out when a file cannot be used.
    """
    where = f"forwards.{forward.name}"
    try:
        ctx = ssl.create_default_context(cafile=forward.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(
            f"{where}.ca_file: cannot load {forward.ca_file!r} ({e}): it must hold PEM certificates"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not forward.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if forward.tls_cert_file:
        try:
            ctx.load_cert_chain(forward.tls_cert_file, forward.tls_key_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(
                f"{where}.tls_cert_file: cannot load {forward.tls_cert_file!r} with key "
                f"{forward.tls_key_file!r} ({e}): check tls_cert_file / tls_key_file (PEM)"
            ) from None
    return ctx
