"""CoordJSON: canonical serialization, the parser, token-aligned parsing (spec 01 §1.3–1.4, 03 §3.2).

Import from the submodules: ``coordjson.serialize`` (``CoordObject``, ``serialize``),
``coordjson.parse`` (``parse``, ``ParseResult``) and ``coordjson.aligned`` (``parse_tokens``).
"""
