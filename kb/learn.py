"""``python -m kb.learn``: the fusion model's training command (see :mod:`kb.eval.learn`)."""

from kb.eval.learn import main

if __name__ == "__main__":
    main()
