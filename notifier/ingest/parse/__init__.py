"""Pure parsers: bytes → Record or `ParseError`. No I/O; nothing of ours but `records`."""
