"""Forwarding records on to HTTP and syslog servers, as an innovaphone gateway does."""
