"""``python -m mlcomp``: the same as the ``mlcomp`` command."""

if __name__ == "__main__":
    from mlcomp.cli import main

    raise SystemExit(main())
