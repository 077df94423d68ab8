"""Server-side TLS for the syslog receiver (RFC 5425), built from certificate files."""

from __future__ import annotations

import ssl


def server_context(
    cert_file: str, key_file: str, client_ca_file: str = "", section: str = "syslog"
) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with `client_ca_file`, clients must present a certificate
    signed by that CA.

    Raises ValueError naming the `section`'s keys, the file and the problem when a file cannot
    be used.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(
            f"{section}.tls_cert_file: cannot load certificate {cert_file!r} with key "
            f"{key_file!r} ({e}): check {section}.tls_cert_file and {section}.tls_key_file "
            "(PEM, key matching the certificate)"
        ) from None
    if client_ca_file:
        try:
            ctx.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(
                f"{section}.tls_client_ca_file: cannot load client CA {client_ca_file!r} ({e}): "
                "it must hold PEM certificates"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
