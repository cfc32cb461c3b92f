"""A test helper: make lcx's code fingerprints see an edited module without changing a file."""


def edit_source(monkeypatch, module: str, old: str, new: str) -> None:
    """Make the code fingerprints see lcx ``module`` with ``old`` replaced by ``new`` (``old``
    empty: ``new`` put first), as if this process had loaded that code; no file changes."""
    from lcx import cache

    real = cache._source

    def source(mod):
        text = real(mod)
        if mod.__name__ == f"lcx.{module}":
            assert old.encode() in text, f"{old!r} is not in lcx/{module}.py"
            text = text.replace(old.encode(), new.encode(), 1)
        return text

    monkeypatch.setattr(cache, "_source", source)
